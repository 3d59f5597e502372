//! Issue 8's netns acceptance: the ClusterIP fabric of issue 7 driven by
//! Kubernetes objects through the real agent. Two nodes with pods, a
//! wire-like client outside on node 0's uplink, and one `xlb agent --config
//! FILE` per node namespace on a file of plain `Service` + `EndpointSlice`
//! documents (the same on both nodes) and the node's own `node:` section
//! ([`netns_tests::kube_fabric::KubeFabric`]). Every Service is dual stack.
//!
//! What is checked, on IPv4 and IPv6:
//! - a pod reaches a ClusterIP whose backends are pods of both nodes: 100
//!   HTTP requests from a pod of each node, every one answered, both
//!   backends answering;
//! - the outside client reaches a NodePort (`externalTrafficPolicy:
//!   Cluster`) on node 0 with backends on both nodes: every connection
//!   exchanges data; the backend on node 1 sees node 0's source-NAT address
//!   and a port of the source-NAT range, the backend on node 0 the client's
//!   own address and port;
//! - `externalTrafficPolicy: Local` on node 0, whose Service has endpoints
//!   only on node 1: the NodePort connection times out (dropped, counted as
//!   `drop_no_local_backend` on node 0, not refused), while a `Cluster` Service
//!   over the same endpoint forwards on the same node (source NAT to node
//!   0) and a pod of node 0 reaches the `Local` Service's ClusterIP (the
//!   internal policy is `Cluster`) with its own source;
//! - that Service's `healthCheckNodePort` answers 503 on node 0 (from the
//!   client and from the node itself) and 200 on node 1;
//! - a terminating endpoint (KEP-1669: `ready: false, serving: true,
//!   terminating: true`) keeps its established connection, which still
//!   exchanges data after the agents reloaded the rewritten objects, while
//!   every new connection goes to the other backend;
//! - `sessionAffinity: ClientIP`: many connections from one pod (a new
//!   source port each) all land on one backend, while the same pod's
//!   connections to a Service without affinity over the same pods spread.
//!
//! Each scenario builds its own rig. Needs root and the datapath build.

use std::{
    collections::BTreeMap,
    io::ErrorKind,
    net::SocketAddr,
    time::{Duration, Instant},
};

use netns_tests::{
    agent_rig::io_error_kind,
    fabric::{PeerSession, PodRef, payload},
    http::http_get,
    kube_fabric::{Condition, KubeFabric, KubeService, ServiceType},
    topology::Family,
};

/// The `xlb` binary under test.
const XLB: &str = env!("CARGO_BIN_EXE_xlb");
/// The service port of the HTTP ClusterIPs.
const SERVICE_PORT: u16 = 8080;
/// Where the pods serve HTTP (the port of `http-echo`).
const HTTP_PORT: u16 = 5678;
/// Where the pods serve the peer echo, behind services of the same port.
const ECHO_PORT: u16 = 9000;
/// The NodePort of the `Cluster` Services.
const NODE_PORT_CLUSTER: u16 = 30080;
/// The NodePort of the `Local` Service.
const NODE_PORT_LOCAL: u16 = 30090;
/// The `Local` Service's healthCheckNodePort.
const HEALTH_CHECK_NODE_PORT: u16 = 32090;
/// The source-NAT port range (the agent's default `--snat-ports`).
const SNAT_PORTS: std::ops::RangeInclusive<u16> = 61_000..=65_535;
/// HTTP requests through the ClusterIP, from each client pod.
const HTTP_REQUESTS: usize = 100;
/// Connections through the NodePort.
const NODE_PORT_CONNECTIONS: usize = 40;
/// New connections after an endpoint started terminating.
const NEW_CONNECTIONS: usize = 30;
/// Connections from one pod to the affinity Service.
const AFFINITY_CONNECTIONS: usize = 30;
/// What one connect, request or read may take.
const TIMEOUT: Duration = Duration::from_secs(3);
/// How long a connection that must be dropped is given: the first SYN and
/// no retransmission (Linux retransmits a SYN after 1 s).
const DROPPED_WITHIN: Duration = Duration::from_millis(900);

/// Prints one of the scenario's figures (shown with `--nocapture`).
macro_rules! report {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr, reason = "the scenario's figures, for --nocapture")]
        {
            eprintln!($($arg)*);
        }
    }};
}

/// The name pod `at`'s servers answer with.
fn pod_name(at: PodRef) -> String {
    format!("n{}p{}", at.node, at.pod)
}

/// A rig of two nodes with `pods_per_node` pods, servers started by
/// `serve`, the agents running on `services`.
fn rig(
    pods_per_node: usize,
    services: &[KubeService],
    serve: impl FnOnce(&mut KubeFabric),
) -> KubeFabric {
    let mut f = KubeFabric::build(XLB, pods_per_node).expect("the rig builds");
    serve(&mut f);
    f.write_objects(services).expect("the agents' files");
    let started = Instant::now();
    f.start_agents().expect("the agents start");
    report!(
        "both agents synced, attached and on every pod veth in {:.2?}",
        started.elapsed()
    );
    f
}

/// HTTP servers on `pods` (both families), each answering its pod's name.
fn serve_http(f: &mut KubeFabric, pods: &[PodRef]) {
    for &at in pods {
        for family in Family::ALL {
            f.fabric
                .serve_http(at, family, HTTP_PORT, &pod_name(at))
                .expect("an HTTP server");
        }
    }
}

/// Peer echo servers on `pods` (both families), each greeting with its
/// pod's name.
fn serve_peer_echo(f: &mut KubeFabric, pods: &[PodRef]) {
    for &at in pods {
        for family in Family::ALL {
            f.fabric
                .serve_peer_echo(at, family, ECHO_PORT, &pod_name(at))
                .expect("a peer echo server");
        }
    }
}

/// `count` HTTP GETs from pod `client` to `addr`; answers per server name.
fn http_spread(
    f: &KubeFabric,
    client: PodRef,
    addr: SocketAddr,
    count: usize,
) -> BTreeMap<String, usize> {
    let mut answers = BTreeMap::new();
    for i in 0..count {
        let answer = http_get(f.fabric.pod_netns(client), addr, "/", TIMEOUT)
            .unwrap_or_else(|e| panic!("GET {i} of {count} from {client:?} to {addr}: {e:?}"));
        assert_eq!(answer.status, 200, "{answer:?}");
        *answers
            .entry(answer.body.trim_end().to_owned())
            .or_default() += 1;
    }
    answers
}

/// The ClusterIP `vip` of `family` with `port`.
fn cluster_addr(vip: u16, family: Family, port: u16) -> SocketAddr {
    SocketAddr::new(netns_tests::fabric::cluster_ip(vip, family), port)
}

#[test]
fn a_pod_reaches_backend_pods_on_both_nodes_through_a_cluster_ip() {
    let started = Instant::now();
    let backends = [PodRef::new(0, 1), PodRef::new(1, 1)];
    let web = KubeService::cluster_ip("web", 1, SERVICE_PORT, HTTP_PORT, &backends);
    let f = rig(2, &[web], |f| serve_http(f, &backends));
    for family in Family::ALL {
        let addr = cluster_addr(1, family, SERVICE_PORT);
        for client in [PodRef::new(0, 0), PodRef::new(1, 0)] {
            let took = Instant::now();
            let spread = http_spread(&f, client, addr, HTTP_REQUESTS);
            report!(
                "{family:?}: {HTTP_REQUESTS} GETs from {} to {addr} in {:.2?}: {spread:?}",
                pod_name(client),
                took.elapsed()
            );
            for &b in &backends {
                assert!(
                    spread.get(&pod_name(b)).is_some_and(|&n| n > 0),
                    "{family:?}: {} never answered {}: {spread:?}",
                    pod_name(b),
                    pod_name(client)
                );
            }
            assert_eq!(spread.values().sum::<usize>(), HTTP_REQUESTS);
        }
    }
    report!("ClusterIP across nodes: done in {:.2?}", started.elapsed());
}

#[test]
fn a_node_port_with_cluster_policy_reaches_both_nodes_and_source_nats_toward_the_other() {
    let started = Instant::now();
    let (local, remote) = (PodRef::new(0, 1), PodRef::new(1, 1));
    let echo = KubeService::node_port(
        "echo",
        2,
        ECHO_PORT,
        ECHO_PORT,
        NODE_PORT_CLUSTER,
        &[local, remote],
    );
    let f = rig(2, &[echo], |f| serve_peer_echo(f, &[local, remote]));
    let client = f.fabric.outside().client.clone();
    for family in Family::ALL {
        let to = SocketAddr::new(f.fabric.outside().uplink.ip(family), NODE_PORT_CLUSTER);
        let snat = f.snat_source(0, family);
        let base = f.stats(0).expect("node 0's stats");
        let mut landed: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..NODE_PORT_CONNECTIONS {
            let mut session = PeerSession::open(&client.netns, to, TIMEOUT).unwrap_or_else(|e| {
                panic!("{family:?}: connection {i} to the NodePort {to}: {e:?}")
            });
            if session.server() == pod_name(remote) {
                assert_eq!(
                    session.seen_as().ip(),
                    snat,
                    "{family:?}: node 1's backend must see node 0's source-NAT address"
                );
                assert!(
                    SNAT_PORTS.contains(&session.seen_as().port()),
                    "{family:?}: {}",
                    session.seen_as()
                );
            } else {
                assert_eq!(session.server(), pod_name(local));
                assert_eq!(
                    session.seen_as(),
                    session.local_addr(),
                    "{family:?}: node 0's own backend sees the client's address and port"
                );
            }
            if i == 0 {
                report!(
                    "{family:?}: {} → {to}: {} sees {}",
                    session.local_addr(),
                    session.server(),
                    session.seen_as()
                );
            }
            session
                .exchange(&payload(4096))
                .unwrap_or_else(|e| panic!("{family:?}: connection {i}: {e}"));
            *landed.entry(session.server().to_owned()).or_default() += 1;
            session.close().expect("an orderly close");
        }
        let now = f.stats(0).expect("node 0's stats");
        let snat_allocated = now["conntrack"]["snat_allocated"].as_u64().unwrap_or(0)
            - base["conntrack"]["snat_allocated"].as_u64().unwrap_or(0);
        report!(
            "{family:?}: {NODE_PORT_CONNECTIONS} NodePort connections: {landed:?}, \
             node 0 allocated {snat_allocated} source-NAT ports"
        );
        for at in [local, remote] {
            assert!(
                landed.get(&pod_name(at)).is_some_and(|&n| n > 0),
                "{family:?}: no connection reached {}: {landed:?}",
                pod_name(at)
            );
        }
        assert!(
            snat_allocated >= landed[&pod_name(remote)] as u64,
            "{family:?}: {snat_allocated} ports for {landed:?}"
        );
    }
    report!(
        "NodePort, Cluster policy: done in {:.2?}",
        started.elapsed()
    );
}

/// The rig of the traffic-policy scenarios: `policy_services` over one
/// peer echo pod on node 1, which it returns with the rig.
fn policy_rig() -> (KubeFabric, PodRef) {
    let remote = PodRef::new(1, 1);
    let f = rig(2, &policy_services(remote), |f| {
        serve_peer_echo(f, &[remote]);
    });
    (f, remote)
}

/// The Services of the traffic-policy scenarios: `local-lb` (LoadBalancer,
/// `externalTrafficPolicy: Local`, a healthCheckNodePort) and `cluster-np`
/// (NodePort, `Cluster`), both over `endpoint` alone.
fn policy_services(endpoint: PodRef) -> Vec<KubeService> {
    let local = KubeService {
        service_type: ServiceType::LoadBalancer,
        node_port: Some(NODE_PORT_LOCAL),
        external_local: true,
        health_check_node_port: Some(HEALTH_CHECK_NODE_PORT),
        ..KubeService::cluster_ip("local-lb", 3, ECHO_PORT, ECHO_PORT, &[endpoint])
    };
    let cluster = KubeService::node_port(
        "cluster-np",
        4,
        ECHO_PORT,
        ECHO_PORT,
        NODE_PORT_CLUSTER,
        &[endpoint],
    );
    vec![local, cluster]
}

#[test]
fn external_traffic_policy_local_drops_on_a_node_without_local_endpoints() {
    let (f, _) = policy_rig();
    let client = f.fabric.outside().client.clone();
    // Both families are tried before anything is asserted, so a failure
    // shows what each did.
    let mut outcomes = Vec::new();
    for family in Family::ALL {
        let to = SocketAddr::new(f.fabric.outside().uplink.ip(family), NODE_PORT_LOCAL);
        let drops = f.verdict(0, "drop_no_local_backend").expect("xlb stats");
        let refusals = f.verdict(0, "refuse_reset").expect("xlb stats");
        let tried = Instant::now();
        let outcome = PeerSession::open(&client.netns, to, DROPPED_WITHIN);
        let took = tried.elapsed();
        let kind = match &outcome {
            Ok(session) => panic!(
                "{family:?}: the Local NodePort {to} on a node without a local endpoint \
                 answered: {} seen as {}",
                session.server(),
                session.seen_as()
            ),
            Err(e) => io_error_kind(e),
        };
        let dropped = f.verdict(0, "drop_no_local_backend").expect("xlb stats") - drops;
        let refused = f.verdict(0, "refuse_reset").expect("xlb stats") - refusals;
        report!(
            "{family:?}: Local NodePort {to} on node 0 failed after {took:.2?} ({kind:?}); \
             node 0 counted drop_no_local_backend +{dropped}, refuse_reset +{refused}"
        );
        outcomes.push((family, kind, dropped, refused));
    }
    // What node 0 programmed for the Service: its external frontends and
    // their (no) backends.
    let services = f
        .agent(0)
        .client
        .json(&["service", "list"])
        .expect("xlb service list");
    for service in services.as_array().into_iter().flatten() {
        let name = service["name"].as_str().unwrap_or_default();
        if name.starts_with("default/local-lb") {
            report!(
                "node 0 programs {name}: frontends {}, backends {}, table size {}",
                service["frontends"],
                service["backends"],
                service["table_size"]
            );
        }
    }
    for (family, kind, dropped, refused) in outcomes {
        assert_eq!(
            kind,
            Some(ErrorKind::TimedOut),
            "{family:?}: dropped (kube-proxy's behaviour for Local without a local endpoint), \
             not refused"
        );
        assert!(dropped >= 1, "{family:?}: the drop is counted");
        assert_eq!(refused, 0, "{family:?}: not refused");
    }
}

#[test]
fn beside_a_local_service_without_local_endpoints_cluster_paths_forward() {
    let (f, remote) = policy_rig();
    let client = f.fabric.outside().client.clone();
    for family in Family::ALL {
        // The same endpoint through a Cluster Service's NodePort on node 0.
        let to = SocketAddr::new(f.fabric.outside().uplink.ip(family), NODE_PORT_CLUSTER);
        let mut session = PeerSession::open(&client.netns, to, TIMEOUT)
            .unwrap_or_else(|e| panic!("{family:?}: the Cluster NodePort {to}: {e:?}"));
        assert_eq!(session.server(), pod_name(remote));
        assert_eq!(session.seen_as().ip(), f.snat_source(0, family));
        session.exchange(&payload(4096)).expect("an exchange");
        session.close().expect("an orderly close");

        // From a pod of node 0, the Local Service's ClusterIP follows the
        // internal policy (Cluster): it reaches the endpoint on node 1.
        let vip = cluster_addr(3, family, ECHO_PORT);
        let pod = PodRef::new(0, 0);
        let mut session = PeerSession::open(f.fabric.pod_netns(pod), vip, TIMEOUT)
            .unwrap_or_else(|e| panic!("{family:?}: the Local Service's ClusterIP {vip}: {e:?}"));
        assert_eq!(session.server(), pod_name(remote));
        assert_eq!(
            session.seen_as(),
            session.local_addr(),
            "{family:?}: a pod's source is kept"
        );
        session.exchange(&payload(4096)).expect("an exchange");
        session.close().expect("an orderly close");
        report!("{family:?}: the Cluster NodePort and the Local Service's ClusterIP forward");
    }
}

#[test]
fn the_health_check_node_port_of_a_local_service_answers_503_without_and_200_with_local_endpoints()
{
    let (f, _) = policy_rig();
    let client = f.fabric.outside().client.clone();
    // Every probe is made before anything is asserted, so a failure shows
    // what each answered.
    let mut outcomes = Vec::new();
    for family in Family::ALL {
        let probes = [
            // node 0 from the outside client, node 0 from itself, node 1
            // from itself (no route leads from the client to node 1).
            (
                0,
                &client.netns,
                SocketAddr::new(f.fabric.outside().uplink.ip(family), HEALTH_CHECK_NODE_PORT),
                503,
            ),
            (
                0,
                &f.fabric.nodes[0].netns,
                f.node_socket(0, family, HEALTH_CHECK_NODE_PORT),
                503,
            ),
            (
                1,
                &f.fabric.nodes[1].netns,
                f.node_socket(1, family, HEALTH_CHECK_NODE_PORT),
                200,
            ),
        ];
        for (node, from, addr, want) in probes {
            let answer = http_get(from, addr, "/", TIMEOUT);
            let seen = match &answer {
                Ok(answer) => format!("{} {}", answer.status, answer.body.trim_end()),
                Err(e) => format!("{e:?}"),
            };
            report!("{family:?}: node {node}'s healthCheckNodePort {addr} from {from}: {seen}");
            outcomes.push((family, node, addr, want, answer.map(|a| a.status), seen));
        }
    }
    for (family, node, addr, want, status, seen) in outcomes {
        assert_eq!(
            status.ok(),
            Some(want),
            "{family:?}: node {node}'s healthCheckNodePort {addr}: {seen}; node {node}'s \
             status: {}",
            f.status(node).map(|s| s.to_string()).unwrap_or_default()
        );
    }
}

#[test]
fn a_terminating_endpoint_keeps_its_connection_while_new_ones_go_elsewhere() {
    let started = Instant::now();
    let backends = [PodRef::new(0, 1), PodRef::new(1, 1)];
    let client = PodRef::new(0, 0);
    let mut echo = KubeService::cluster_ip("echo", 1, ECHO_PORT, ECHO_PORT, &backends);
    let f = rig(2, std::slice::from_ref(&echo), |f| {
        serve_peer_echo(f, &backends);
    });
    // One long-lived connection per family, all on the same backend (the
    // one the first lands on): connections are opened until one lands there.
    let mut held: Vec<(Family, PeerSession)> = Vec::new();
    let mut doomed: Option<PodRef> = None;
    for family in Family::ALL {
        let vip = cluster_addr(1, family, ECHO_PORT);
        for attempt in 0.. {
            assert!(
                attempt < 20,
                "{family:?}: 20 connections, none on {doomed:?}"
            );
            let mut session = PeerSession::open(f.fabric.pod_netns(client), vip, TIMEOUT)
                .unwrap_or_else(|e| panic!("{family:?}: {vip}: {e:?}"));
            let on = *backends
                .iter()
                .find(|&&b| pod_name(b) == session.server())
                .expect("a known backend");
            if *doomed.get_or_insert(on) == on {
                session.exchange(&payload(4096)).expect("an exchange");
                held.push((family, session));
                break;
            }
            session.close().expect("an orderly close");
        }
    }
    let doomed = doomed.expect("a held connection");
    let other: Vec<String> = backends
        .iter()
        .filter(|&&b| b != doomed)
        .map(|&b| pod_name(b))
        .collect();
    report!(
        "held {} connections on {}; marking it terminating",
        held.len(),
        pod_name(doomed)
    );

    assert!(echo.set_condition(doomed, Condition::ServingTerminating));
    let rewritten = Instant::now();
    f.rewrite_objects(std::slice::from_ref(&echo))
        .expect("both agents reload");
    report!(
        "both agents reloaded the rewritten objects within {:.2?}",
        rewritten.elapsed()
    );

    for (family, session) in &mut held {
        session
            .exchange(&payload(64 * 1024))
            .unwrap_or_else(|e| panic!("{family:?}: the held connection after the change: {e}"));
    }
    for family in Family::ALL {
        let vip = cluster_addr(1, family, ECHO_PORT);
        let mut landed: BTreeMap<String, usize> = BTreeMap::new();
        for i in 0..NEW_CONNECTIONS {
            let session = PeerSession::open(f.fabric.pod_netns(client), vip, TIMEOUT)
                .unwrap_or_else(|e| panic!("{family:?}: new connection {i} to {vip}: {e:?}"));
            *landed.entry(session.server().to_owned()).or_default() += 1;
            session.close().expect("an orderly close");
        }
        report!("{family:?}: {NEW_CONNECTIONS} new connections: {landed:?}");
        assert!(
            landed.keys().all(|name| other.contains(name)),
            "{family:?}: a new connection reached the terminating {}: {landed:?}",
            pod_name(doomed)
        );
    }
    for (family, mut session) in held {
        session
            .exchange(&payload(4096))
            .unwrap_or_else(|e| panic!("{family:?}: the held connection at the end: {e}"));
        report!(
            "{family:?}: the held connection echoed {} bytes in all",
            session.echoed()
        );
        session.close().expect("an orderly close");
    }
    report!("terminating endpoint: done in {:.2?}", started.elapsed());
}

#[test]
fn client_ip_affinity_holds_across_source_ports() {
    let backends = [PodRef::new(0, 1), PodRef::new(1, 1), PodRef::new(1, 2)];
    let sticky = KubeService {
        client_ip_affinity: true,
        ..KubeService::cluster_ip("sticky", 5, SERVICE_PORT, HTTP_PORT, &backends)
    };
    let spread = KubeService::cluster_ip("spread", 6, SERVICE_PORT, HTTP_PORT, &backends);
    let f = rig(3, &[sticky, spread], |f| serve_http(f, &backends));
    for family in Family::ALL {
        for client in [PodRef::new(0, 0), PodRef::new(1, 0)] {
            let answers = http_spread(
                &f,
                client,
                cluster_addr(5, family, SERVICE_PORT),
                AFFINITY_CONNECTIONS,
            );
            report!(
                "{family:?}: {AFFINITY_CONNECTIONS} connections from {} with ClientIP \
                 affinity: {answers:?}",
                pod_name(client)
            );
            assert_eq!(answers.len(), 1, "{family:?}: {answers:?}");
        }
        // Without affinity, the same pod's connections spread: the check
        // above is not one backend by chance.
        let answers = http_spread(
            &f,
            PodRef::new(0, 0),
            cluster_addr(6, family, SERVICE_PORT),
            AFFINITY_CONNECTIONS,
        );
        report!("{family:?}: without affinity: {answers:?}");
        assert!(answers.len() > 1, "{family:?}: {answers:?}");
    }
}
