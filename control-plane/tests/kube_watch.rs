//! The Kubernetes source end to end, without a cluster:
//! - reflector stores fed by hand with `watcher::Event`s (virtual time, so
//!   "nothing happens" and the min sync period are exact);
//! - a mock API server (`tower-test`) behind a real `kube::Client`, answering
//!   LIST and WATCH for Services, EndpointSlices and Nodes;
//! - the same objects read from a file give the same model.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::extract::Query;
use control_plane::source::{
    file,
    kube::{
        TranslateOptions,
        node::NodePortAddresses,
        sync::{KubeSource, KubeState, SyncSettings},
        watch::{self, Cache, label_selector},
    },
};
use http_body_util::{BodyExt as _, Full, StreamBody, combinators::BoxBody};
use hyper::{
    Request, Response, StatusCode,
    body::{Bytes, Frame},
};
use k8s_openapi::api::{
    core::v1::{Node, Service},
    discovery::v1::EndpointSlice,
};
use kube::runtime::watcher::{self as kube_watcher, Event};
use serde_json::{Value, json};
use tokio::{
    sync::{mpsc, watch as channel},
    time::Instant,
};
use tokio_stream::wrappers::UnboundedReceiverStream;

type States = channel::Receiver<Option<Arc<KubeState>>>;

fn settings(min_sync_period: Duration) -> SyncSettings {
    SyncSettings {
        node_name: "node-a".to_owned(),
        options: TranslateOptions::default(),
        nodeport_addresses: NodePortAddresses::FromNode,
        min_sync_period,
    }
}

// --- Objects ------------------------------------------------------------

fn service_json(name: &str, cluster_ip: &str, port: u16) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": "shop" },
        "spec": {
            "clusterIP": cluster_ip,
            "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
        },
    })
}

fn slice_json(service: &str, addresses: &[&str]) -> Value {
    let endpoints: Vec<Value> = addresses
        .iter()
        .map(|a| json!({ "addresses": [a], "nodeName": "node-a", "conditions": { "ready": true } }))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-1"), "namespace": "shop",
            "labels": { "kubernetes.io/service-name": service },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

fn node_json(name: &str, addresses: &[&str]) -> Value {
    let addresses: Vec<Value> = addresses
        .iter()
        .map(|a| json!({ "type": "InternalIP", "address": a }))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name },
        "status": { "addresses": addresses },
    })
}

fn object<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("a valid object")
}

/// Service name → its backends, as `address:port`.
fn backends(state: &KubeState) -> BTreeMap<String, Vec<String>> {
    state
        .translation
        .model
        .services
        .iter()
        .map(|(name, s)| {
            let backends = s.backends.iter().map(|b| b.addr.to_string()).collect();
            (name.to_string(), backends)
        })
        .collect()
}

fn expect_backends(state: &KubeState, expected: &[(&str, &[&str])]) -> bool {
    let expected: BTreeMap<String, Vec<String>> = expected
        .iter()
        .map(|(name, addrs)| {
            (
                (*name).to_owned(),
                addrs.iter().map(|a| (*a).to_owned()).collect(),
            )
        })
        .collect();
    backends(state) == expected
}

/// The next sync that satisfies `wanted`, within 10 s.
async fn wait_for(
    states: &mut States,
    what: &str,
    wanted: impl Fn(&KubeState) -> bool,
) -> Arc<KubeState> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(state) = states.borrow_and_update().clone()
            && wanted(&state)
        {
            return state;
        }
        match tokio::time::timeout_at(deadline, states.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("the source stopped while waiting for {what}"),
            Err(_) => panic!(
                "no sync with {what} within 10 s; last: {:?}",
                states.borrow().as_deref().map(backends)
            ),
        }
    }
}

// --- Hand-fed reflectors --------------------------------------------------

type Feed<K> = mpsc::UnboundedSender<kube_watcher::Result<Event<K>>>;

/// A source whose three watches are channels the test writes to.
struct Fed {
    services: Feed<Service>,
    slices: Feed<EndpointSlice>,
    node: Feed<Node>,
    caches: watch::Caches,
    states: States,
    _source: KubeSource,
}

impl Fed {
    fn new(min_sync_period: Duration) -> Self {
        let (caches, writers) = watch::caches(true);
        let (services, services_rx) = mpsc::unbounded_channel();
        let (slices, slices_rx) = mpsc::unbounded_channel();
        let (node, node_rx) = mpsc::unbounded_channel();
        let status = || Arc::clone(&caches.status);
        let tasks = vec![
            tokio::spawn(watch::reflect(
                writers.services,
                UnboundedReceiverStream::new(services_rx),
                Cache::Services,
                status(),
            )),
            tokio::spawn(watch::reflect(
                writers.slices,
                UnboundedReceiverStream::new(slices_rx),
                Cache::EndpointSlices,
                status(),
            )),
            tokio::spawn(watch::reflect(
                writers.node.expect("a node store"),
                UnboundedReceiverStream::new(node_rx),
                Cache::Node,
                status(),
            )),
        ];
        let source = KubeSource::run(caches.clone(), tasks, settings(min_sync_period));
        Self {
            services,
            slices,
            node,
            caches,
            states: source.states.clone(),
            _source: source,
        }
    }
}

/// A full list: `Init`, one `InitApply` per object, `InitDone`.
fn relist<K>(feed: &Feed<K>, objects: Vec<K>) {
    feed.send(Ok(Event::Init)).expect("reflector running");
    for object in objects {
        feed.send(Ok(Event::InitApply(object)))
            .expect("reflector running");
    }
    feed.send(Ok(Event::InitDone)).expect("reflector running");
}

fn apply<K>(feed: &Feed<K>, object: K) {
    feed.send(Ok(Event::Apply(object)))
        .expect("reflector running");
}

/// Asserts that no sync comes for a minute of virtual time: the paused clock
/// only jumps ahead when every task is idle, so this also means the events
/// sent so far were all taken in.
async fn assert_quiet(states: &mut States) {
    let next = tokio::time::timeout(Duration::from_secs(60), states.changed()).await;
    assert!(
        next.is_err(),
        "unexpected sync: {:?}",
        states.borrow().as_deref().map(backends)
    );
}

#[tokio::test(start_paused = true)]
async fn the_first_sync_waits_for_services_and_endpoint_slices() {
    let mut fed = Fed::new(Duration::from_secs(1));
    relist(
        &fed.services,
        vec![object(service_json("web", "198.18.100.1", 80))],
    );
    relist(
        &fed.node,
        vec![object(node_json("node-a", &["198.18.0.10"]))],
    );
    // Programming now would show `web` without endpoints: wait for slices.
    assert_quiet(&mut fed.states).await;
    assert!(fed.states.borrow().is_none());
    assert_eq!(fed.caches.status.synced(Cache::Services), Some(true));
    assert_eq!(fed.caches.status.synced(Cache::EndpointSlices), Some(false));
    assert!(!fed.caches.status.all_synced());

    relist(
        &fed.slices,
        vec![object(slice_json("web", &["198.18.2.1"]))],
    );
    let state = wait_for(&mut fed.states, "the first sync", |_| true).await;
    assert!(expect_backends(
        &state,
        &[("shop/web:http", &["198.18.2.1:8080"])]
    ));
    assert_eq!(state.node.name, "node-a");
    assert_eq!(
        state.node.addresses,
        ["198.18.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(fed.caches.status.all_synced());
}

#[tokio::test(start_paused = true)]
async fn the_model_follows_applies_and_deletes() {
    let mut fed = Fed::new(Duration::from_secs(1));
    relist(
        &fed.services,
        vec![object(service_json("web", "198.18.100.1", 80))],
    );
    relist(
        &fed.slices,
        vec![object(slice_json("web", &["198.18.2.1"]))],
    );
    relist(
        &fed.node,
        vec![object(node_json("node-a", &["198.18.0.10"]))],
    );
    wait_for(&mut fed.states, "web", |s| {
        expect_backends(s, &[("shop/web:http", &["198.18.2.1:8080"])])
    })
    .await;

    apply(
        &fed.slices,
        object(slice_json("web", &["198.18.2.1", "198.18.2.2"])),
    );
    wait_for(&mut fed.states, "a second endpoint", |s| {
        expect_backends(
            s,
            &[("shop/web:http", &["198.18.2.1:8080", "198.18.2.2:8080"])],
        )
    })
    .await;

    fed.services
        .send(Ok(Event::Delete(object(service_json(
            "web",
            "198.18.100.1",
            80,
        )))))
        .expect("reflector running");
    wait_for(&mut fed.states, "no service", |s| {
        s.translation.model.services.is_empty()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_relist_drops_objects_deleted_while_the_watch_was_down() {
    let mut fed = Fed::new(Duration::from_secs(1));
    relist(
        &fed.services,
        vec![
            object(service_json("web", "198.18.100.1", 80)),
            object(service_json("api", "198.18.100.2", 80)),
        ],
    );
    relist(
        &fed.slices,
        vec![
            object(slice_json("web", &["198.18.2.1"])),
            object(slice_json("api", &["198.18.3.1"])),
        ],
    );
    relist(
        &fed.node,
        vec![object(node_json("node-a", &["198.18.0.10"]))],
    );
    wait_for(&mut fed.states, "web and api", |s| {
        expect_backends(
            s,
            &[
                ("shop/api:http", &["198.18.3.1:8080"]),
                ("shop/web:http", &["198.18.2.1:8080"]),
            ],
        )
    })
    .await;

    // The watch was down while `api` was deleted; the relist does not name it.
    fed.services
        .send(Ok(Event::Init))
        .expect("reflector running");
    fed.services
        .send(Ok(Event::InitApply(object(service_json(
            "web",
            "198.18.100.1",
            80,
        )))))
        .expect("reflector running");
    // Until InitDone the store keeps what it had: a relist in progress
    // withdraws nothing.
    assert_quiet(&mut fed.states).await;
    assert_eq!(fed.caches.services.state().len(), 2);

    fed.services
        .send(Ok(Event::InitDone))
        .expect("reflector running");
    wait_for(&mut fed.states, "api gone", |s| {
        expect_backends(s, &[("shop/web:http", &["198.18.2.1:8080"])])
    })
    .await;
    assert_eq!(fed.caches.services.state().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_changes_is_one_sync_and_a_change_after_quiet_syncs_at_once() {
    let min_sync_period = Duration::from_secs(1);
    let mut fed = Fed::new(min_sync_period);
    relist(
        &fed.services,
        vec![object(service_json("web", "198.18.100.1", 80))],
    );
    relist(
        &fed.slices,
        vec![object(slice_json("web", &["198.18.2.1"]))],
    );
    relist(
        &fed.node,
        vec![object(node_json("node-a", &["198.18.0.10"]))],
    );
    wait_for(&mut fed.states, "the first sync", |_| true).await;
    let first = Instant::now();

    let mut addresses = vec!["198.18.2.1".to_owned()];
    for i in 2..=6 {
        addresses.push(format!("198.18.2.{i}"));
        let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
        apply(&fed.slices, object(slice_json("web", &refs)));
    }
    // The next sync holds the whole burst, one period after the first.
    fed.states.changed().await.expect("a sync");
    let state = fed.states.borrow_and_update().clone().expect("a state");
    assert_eq!(backends(&state)["shop/web:http"].len(), 6);
    assert!(
        first.elapsed() >= min_sync_period,
        "synced {:?} after the previous one",
        first.elapsed()
    );
    assert_quiet(&mut fed.states).await;

    // After a quiet period, a change is programmed without waiting.
    let changed = Instant::now();
    apply(&fed.slices, object(slice_json("web", &["198.18.2.9"])));
    wait_for(&mut fed.states, "198.18.2.9", |s| {
        expect_backends(s, &[("shop/web:http", &["198.18.2.9:8080"])])
    })
    .await;
    assert!(
        changed.elapsed() < min_sync_period,
        "{:?}",
        changed.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_watch_error_is_shown_and_keeps_the_caches() {
    let mut fed = Fed::new(Duration::from_secs(1));
    relist(
        &fed.services,
        vec![object(service_json("web", "198.18.100.1", 80))],
    );
    relist(
        &fed.slices,
        vec![object(slice_json("web", &["198.18.2.1"]))],
    );
    relist(
        &fed.node,
        vec![object(node_json("node-a", &["198.18.0.10"]))],
    );
    wait_for(&mut fed.states, "the first sync", |_| true).await;

    fed.slices
        .send(Err(kube_watcher::Error::NoResourceVersion))
        .expect("reflector running");
    assert_quiet(&mut fed.states).await;
    let error = fed.caches.status.last_error().expect("an error shown");
    assert!(
        error.starts_with("endpointslices: no metadata.resourceVersion"),
        "{error}"
    );
    assert!(expect_backends(
        &fed.states.borrow().clone().expect("a state"),
        &[("shop/web:http", &["198.18.2.1:8080"])]
    ));

    apply(&fed.slices, object(slice_json("web", &["198.18.2.2"])));
    wait_for(&mut fed.states, "the watch back", |s| {
        expect_backends(s, &[("shop/web:http", &["198.18.2.2:8080"])])
    })
    .await;
    assert_eq!(fed.caches.status.last_error(), None);
}

// --- A mock API server ------------------------------------------------------

type MockBody = BoxBody<Bytes, Infallible>;
type Handle = tower_test::mock::Handle<Request<kube::client::Body>, Response<MockBody>>;

/// The kinds the source watches, by collection path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Services,
    EndpointSlices,
    Nodes,
}

impl Kind {
    fn of_path(path: &str) -> Option<Self> {
        match path {
            "/api/v1/services" => Some(Self::Services),
            "/apis/discovery.k8s.io/v1/endpointslices" => Some(Self::EndpointSlices),
            "/api/v1/nodes" => Some(Self::Nodes),
            _ => None,
        }
    }

    fn of_object(value: &Value) -> Self {
        match value["kind"].as_str() {
            Some("Service") => Self::Services,
            Some("EndpointSlice") => Self::EndpointSlices,
            Some("Node") => Self::Nodes,
            other => panic!("no mock for kind {other:?}"),
        }
    }

    fn list(self) -> (&'static str, &'static str) {
        match self {
            Self::Services => ("v1", "ServiceList"),
            Self::EndpointSlices => ("discovery.k8s.io/v1", "EndpointSliceList"),
            Self::Nodes => ("v1", "NodeList"),
        }
    }
}

type Chunks = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

/// One open WATCH: its kind, selectors, and the response body it streams.
struct Watcher {
    kind: Kind,
    labels: String,
    fields: String,
    body: Chunks,
}

/// The cluster the mock API server answers from.
#[derive(Default)]
struct Cluster {
    /// The resourceVersion of the last change.
    version: u64,
    objects: BTreeMap<(Kind, String), Value>,
    /// Every change: (version, kind, event type, object), for watches that
    /// start from an older resourceVersion.
    log: Vec<(u64, Kind, &'static str, Value)>,
    watchers: Vec<Watcher>,
    /// Every request, as `path?query`.
    requests: Vec<String>,
    /// Answer every request with 503 (an API server that is down).
    unavailable: bool,
    /// Every request fails as a refused connection does.
    refused: bool,
}

/// A connection error as hyper-util's client makes one: its message names
/// the stage, and only its source says what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("client error (Connect)")]
struct ConnectFailed(#[source] std::io::Error);

fn object_key(value: &Value) -> String {
    let meta = &value["metadata"];
    format!(
        "{}/{}",
        meta["namespace"].as_str().unwrap_or(""),
        meta["name"].as_str().unwrap_or("")
    )
}

/// A label selector of the forms kube-proxy's uses: `key`, `!key`,
/// `key=value`, comma-separated.
fn labels_match(selector: &str, value: &Value) -> bool {
    let labels = &value["metadata"]["labels"];
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some(key) = term.strip_prefix('!') {
            labels.get(key).is_none()
        } else if let Some((key, wanted)) = term.split_once('=') {
            labels.get(key).and_then(Value::as_str) == Some(wanted)
        } else {
            labels.get(term).is_some()
        }
    })
}

/// Only `metadata.name=<name>` (the Node watch's) is supported.
fn fields_match(selector: &str, value: &Value) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let (field, wanted) = term.split_once('=').expect("field=value");
        assert_eq!(
            field, "metadata.name",
            "unsupported field selector {selector}"
        );
        value["metadata"]["name"].as_str() == Some(wanted)
    })
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).expect("json");
    line.push(b'\n');
    Bytes::from(line)
}

impl Cluster {
    fn change(&mut self, kind: &'static str, mut value: Value) {
        self.version += 1;
        value["metadata"]["resourceVersion"] = json!(self.version.to_string());
        let kind_of = Kind::of_object(&value);
        let key = (kind_of, object_key(&value));
        if kind == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, value.clone());
        }
        self.log.push((self.version, kind_of, kind, value.clone()));
        self.watchers.retain(|w| {
            if w.kind != kind_of
                || !labels_match(&w.labels, &value)
                || !fields_match(&w.fields, &value)
            {
                return true;
            }
            // A watcher whose client went away is forgotten.
            w.body
                .send(Ok(Frame::data(watch_line(kind, &value))))
                .is_ok()
        });
    }

    fn apply(&mut self, value: Value) {
        let key = (Kind::of_object(&value), object_key(&value));
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.change(kind, value);
    }

    fn delete(&mut self, value: Value) {
        self.change("DELETED", value);
    }

    fn answer(&mut self, path: &str, query: &HashMap<String, String>) -> Response<MockBody> {
        let kind = Kind::of_path(path).unwrap_or_else(|| panic!("unexpected request {path}"));
        let labels = query.get("labelSelector").cloned().unwrap_or_default();
        let fields = query.get("fieldSelector").cloned().unwrap_or_default();
        if query.get("watch").is_some_and(|w| w == "true" || w == "1") {
            let since: u64 = query
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let (body, chunks) = mpsc::unbounded_channel();
            for (version, k, event, value) in &self.log {
                if *version > since
                    && *k == kind
                    && labels_match(&labels, value)
                    && fields_match(&fields, value)
                {
                    let _ = body.send(Ok(Frame::data(watch_line(event, value))));
                }
            }
            self.watchers.push(Watcher {
                kind,
                labels,
                fields,
                body,
            });
            let stream = StreamBody::new(UnboundedReceiverStream::new(chunks));
            return Response::new(stream.boxed());
        }
        let items: Vec<&Value> = self
            .objects
            .iter()
            .filter(|((k, _), v)| {
                *k == kind && labels_match(&labels, v) && fields_match(&fields, v)
            })
            .map(|(_, v)| v)
            .collect();
        let (api_version, list_kind) = kind.list();
        let list = json!({
            "apiVersion": api_version, "kind": list_kind,
            "metadata": { "resourceVersion": self.version.to_string() },
            "items": items,
        });
        Response::new(Full::new(Bytes::from(list.to_string())).boxed())
    }
}

/// Serves `cluster` to the client side of `handle` until the client is gone.
async fn serve(mut handle: Handle, cluster: Arc<Mutex<Cluster>>) {
    while let Some((request, respond)) = handle.next_request().await {
        let uri = request.uri().clone();
        let query: HashMap<String, String> =
            Query::try_from_uri(&uri).map(|q| q.0).unwrap_or_default();
        let mut cluster = cluster.lock().expect("cluster");
        cluster
            .requests
            .push(format!("{}?{}", uri.path(), uri.query().unwrap_or("")));
        if cluster.refused {
            respond.send_error(ConnectFailed(std::io::ErrorKind::ConnectionRefused.into()));
            continue;
        }
        let response = if cluster.unavailable {
            let status = json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": "the server is currently unable to handle the request",
                "reason": "ServiceUnavailable", "code": 503,
            });
            let mut response = Response::new(Full::new(Bytes::from(status.to_string())).boxed());
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        } else {
            cluster.answer(uri.path(), &query)
        };
        respond.send_response(response);
    }
}

/// A source reading `cluster` through a real `kube::Client`.
fn source_on(
    cluster: &Arc<Mutex<Cluster>>,
    settings: SyncSettings,
) -> (KubeSource, tokio::task::JoinHandle<()>) {
    let (service, handle) =
        tower_test::mock::pair::<Request<kube::client::Body>, Response<MockBody>>();
    let server = tokio::spawn(serve(handle, Arc::clone(cluster)));
    let client = kube::Client::new(service, "default");
    (KubeSource::start(client, settings), server)
}

#[tokio::test]
async fn through_the_api_the_model_follows_adds_updates_and_deletes() {
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    {
        let mut c = cluster.lock().unwrap();
        c.apply(service_json("web", "198.18.100.1", 80));
        let mut other = service_json("legacy", "198.18.100.9", 80);
        other["metadata"]["labels"] =
            json!({ "service.kubernetes.io/service-proxy-name": "other" });
        c.apply(other);
        c.apply(slice_json("web", &["198.18.2.1"]));
        c.apply(node_json("node-a", &["198.18.0.10"]));
        c.apply(node_json("node-b", &["198.18.0.11"]));
    }
    let (source, server) = source_on(&cluster, settings(Duration::from_millis(10)));
    let mut states = source.states.clone();
    let first = wait_for(&mut states, "web", |s| {
        expect_backends(s, &[("shop/web:http", &["198.18.2.1:8080"])])
    })
    .await;
    assert_eq!(
        first.node.addresses,
        ["198.18.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    assert!(source.status.all_synced());

    // Added.
    cluster
        .lock()
        .unwrap()
        .apply(service_json("api", "198.18.100.2", 80));
    cluster
        .lock()
        .unwrap()
        .apply(slice_json("api", &["198.18.3.1"]));
    wait_for(&mut states, "api added", |s| {
        expect_backends(
            s,
            &[
                ("shop/api:http", &["198.18.3.1:8080"]),
                ("shop/web:http", &["198.18.2.1:8080"]),
            ],
        )
    })
    .await;

    // Updated: a second endpoint, and a new port on the Service.
    cluster
        .lock()
        .unwrap()
        .apply(slice_json("web", &["198.18.2.1", "198.18.2.2"]));
    cluster
        .lock()
        .unwrap()
        .apply(service_json("web", "198.18.100.1", 8000));
    let updated = wait_for(&mut states, "web updated", |s| {
        backends(s).get("shop/web:http").map(Vec::len) == Some(2)
            && s.translation.model.frontends().any(|(_, f)| f.port == 8000)
    })
    .await;
    assert!(
        !updated
            .translation
            .model
            .frontends()
            .any(|(_, f)| f.port == 80 && f.addr.to_string() == "198.18.100.1")
    );

    // Deleted.
    cluster.lock().unwrap().delete(slice_json("api", &[]));
    cluster
        .lock()
        .unwrap()
        .delete(service_json("web", "198.18.100.1", 8000));
    wait_for(&mut states, "web deleted, api without endpoints", |s| {
        expect_backends(s, &[("shop/api:http", &[])])
    })
    .await;

    // The Node's address changes: NodePorts follow it.
    cluster
        .lock()
        .unwrap()
        .apply(node_json("node-a", &["198.18.0.20"]));
    wait_for(&mut states, "the new node address", |s| {
        s.node.addresses == ["198.18.0.20".parse::<std::net::IpAddr>().unwrap()]
    })
    .await;

    let requests = cluster.lock().unwrap().requests.clone();
    let selector = label_selector(&TranslateOptions::default());
    let of = |path: &str| -> Vec<HashMap<String, String>> {
        requests
            .iter()
            .filter(|r| r.starts_with(&format!("{path}?")))
            .map(|r| {
                let uri: hyper::Uri = r.parse().expect("uri");
                Query::try_from_uri(&uri).map(|q| q.0).expect("query")
            })
            .collect()
    };
    for path in [
        "/api/v1/services",
        "/apis/discovery.k8s.io/v1/endpointslices",
    ] {
        let queries = of(path);
        assert!(queries.len() >= 2, "{path}: LIST and WATCH: {requests:?}");
        for query in queries {
            assert_eq!(query.get("labelSelector"), Some(&selector), "{path}");
        }
    }
    for query in of("/api/v1/nodes") {
        assert_eq!(
            query.get("fieldSelector").map(String::as_str),
            Some("metadata.name=node-a")
        );
    }
    drop(source);
    server.abort();
}

/// The first watch error `source` shows, within 10 s.
async fn first_watch_error(source: &KubeSource) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(error) = source.status.last_error() {
            return error;
        }
        assert!(Instant::now() < deadline, "no watch error shown");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_unreachable_api_programs_nothing_until_it_answers() {
    let cluster = Arc::new(Mutex::new(Cluster {
        unavailable: true,
        ..Cluster::default()
    }));
    {
        let mut c = cluster.lock().unwrap();
        c.apply(service_json("web", "198.18.100.1", 80));
        c.apply(slice_json("web", &["198.18.2.1"]));
        c.apply(node_json("node-a", &["198.18.0.10"]));
    }
    let (source, server) = source_on(&cluster, settings(Duration::from_millis(10)));
    let error = first_watch_error(&source).await;
    assert!(
        error.contains("failed to perform initial object list"),
        "{error}"
    );
    assert!(
        source.states.borrow().is_none(),
        "nothing may be programmed yet"
    );
    assert!(!source.status.all_synced());

    // The API comes back: the watches retry (with backoff) and sync.
    cluster.lock().unwrap().unavailable = false;
    let mut states = source.states.clone();
    wait_for(&mut states, "web", |s| {
        expect_backends(s, &[("shop/web:http", &["198.18.2.1:8080"])])
    })
    .await;
    drop(source);
    server.abort();
}

#[tokio::test]
async fn a_watch_error_says_why_the_connection_failed() {
    let cluster = Arc::new(Mutex::new(Cluster {
        refused: true,
        ..Cluster::default()
    }));
    let (source, server) = source_on(&cluster, settings(Duration::from_millis(10)));
    let error = first_watch_error(&source).await;
    assert!(
        error.contains("client error (Connect)") && error.contains("connection refused"),
        "{error}"
    );
    drop(source);
    server.abort();
}

#[tokio::test]
async fn the_same_objects_from_a_file_give_the_same_model() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kube_objects.yaml");
    let text = std::fs::read_to_string(&path).expect("the test file");
    let cluster = Arc::new(Mutex::new(Cluster::default()));
    {
        let mut c = cluster.lock().unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).expect("yaml");
            if let Some(node) = value.get("node") {
                // The native document's node, as the cluster's Node object.
                let addresses: Vec<&str> = node["addresses"]
                    .as_array()
                    .expect("addresses")
                    .iter()
                    .map(|a| a.as_str().expect("an address"))
                    .collect();
                c.apply(node_json(
                    node["name"].as_str().expect("a name"),
                    &addresses,
                ));
            } else {
                c.apply(value);
            }
        }
    }
    let from_file = file::load(&path).expect("a valid file");
    let (source, server) = source_on(&cluster, settings(Duration::from_millis(10)));
    let mut states = source.states.clone();
    let state = wait_for(&mut states, "the first sync", |_| true).await;
    assert_eq!(state.translation.model, from_file);
    // The file is not trivial: several services, NodePorts, a VIP.
    assert!(
        from_file.services.len() >= 5,
        "{:?}",
        from_file.services.keys()
    );
    assert!(
        !state
            .translation
            .model
            .services
            .keys()
            .any(|n| n.0.contains("legacy"))
    );
    assert_eq!(state.translation.health_check_node_ports.len(), 1);
    assert_eq!(state.translation.health_check_node_ports[0].port, 32100);
    assert_eq!(
        state.translation.health_check_node_ports[0].local_endpoints,
        1
    );
    drop(source);
    server.abort();
}
