//! Issue 7's netns scenarios: the ClusterIP fabric, with `tc_lb` on the host
//! side of every pod veth and `xdp_lb` on every node uplink and fabric link.
//!
//! The rig — one or two nodes with pods, a wire-like client outside on node
//! 0's uplink, one datapath per node, services programmed as each node's
//! agent would — is [`netns_tests::fabric::Fabric`].
//!
//! What is checked, on IPv4 and IPv6:
//! - the rig itself, without xlb: pods reach each other across the fabric,
//!   the outside client reaches a pod of node 0;
//! - one node, four pods: a pod reaches a ClusterIP whose two backends are
//!   pods of the node: 200 HTTP requests, both backends answering; a 10 MB
//!   transfer both ways, the backend seeing the client pod's own address; UDP
//!   request/response; UDP to a backend pod with nothing on the port is
//!   refused at once (its ICMP error translated back); pod-to-pod traffic to
//!   no service passes untouched;
//! - two nodes: a pod of node 0 reaches a ClusterIP whose backends are pods
//!   of node 1 (HTTP, 10 MB both ways across the wire-like fabric, UDP), and
//!   node 1's datapath, programmed alike, tracks none of it;
//! - the outside client reaches a NodePort on node 0: with the only backend
//!   on node 1 (`snat_remote`), the backend sees node 0's source-NAT address
//!   and a port of the source-NAT range, and the replies come back through
//!   node 0 (with pinned neighbours, and again with neighbours that resolve
//!   on the first packets, which `xdp_lb` hands to the kernel); with the
//!   only backend on node 0, it sees the client's own address and port;
//! - the outside client reaches a NodePort whose backend is node 0 itself (a
//!   hostNetwork pod's endpoint): the replies are translated at the uplink's
//!   egress;
//! - node 0 itself reaches ClusterIPs (balanced at its uplink's egress): a
//!   pod of its own, a pod of node 1, and itself (hairpin), over TCP, and
//!   UDP to its own pod;
//! - hairpin: a pod reaching itself through its service (it is the only
//!   backend) gets its answers, and sees the hairpin source;
//! - a post-DNAT clash: one pod, one source port, two connections to two
//!   ClusterIPs of the same single backend: both exchange data;
//! - source-NAT port exhaustion: with 2 ports, a third concurrent NodePort
//!   connection to the remote backend is refused at once (a reset, counted
//!   as `SnatExhausted`), and once the two are closed and their entries have
//!   expired, new connections go through again.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use netns_tests::{
    EchoClient, Error,
    fabric::{Fabric, PeerSession, PodRef, Programmed, Service, Shape, hairpin_source, payload},
    http::http_get,
    topology::{Family, Options},
    wait_for,
};
use xdp_lb::{Config, CtEvent, Protocol, Verdict};

/// The service port of the ClusterIPs.
const SERVICE_PORT: u16 = 8080;
/// Where the pods serve HTTP and UDP echo (the port of `http-echo`).
const HTTP_PORT: u16 = 5678;
/// Where the pods serve the peer echo, behind a service of the same port.
const ECHO_PORT: u16 = 9000;
/// A port the pods serve nothing on.
const CLOSED_PORT: u16 = 5679;
/// The NodePort to a remote backend.
const NODE_PORT_REMOTE: u16 = 30080;
/// The NodePort to a local backend.
const NODE_PORT_LOCAL: u16 = 30081;
/// The NodePort to the node itself.
const NODE_PORT_HOST: u16 = 30082;
/// Where the node itself serves HTTP.
const HOST_PORT: u16 = 5680;
/// HTTP requests to the node itself through its NodePort.
const HOST_REQUESTS: usize = 20;
/// HTTP requests from the node itself to each ClusterIP.
const NODE_REQUESTS: usize = 10;
/// HTTP requests through the ClusterIP on one node.
const HTTP_REQUESTS: usize = 200;
/// HTTP requests through the ClusterIP across nodes.
const HTTP_REQUESTS_ACROSS: usize = 100;
/// UDP requests through a ClusterIP.
const UDP_REQUESTS: usize = 40;
/// Bytes sent each way by a bulk transfer.
const BULK_BYTES: usize = 10 * 1024 * 1024;
/// What one connect, request or read may take.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Prints one of the scenario's figures (shown with `--nocapture`).
macro_rules! report {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr, reason = "the scenario's figures, for --nocapture")]
        {
            eprintln!($($arg)*);
        }
    }};
}

fn backend_name(i: usize) -> String {
    format!("b{i}")
}

/// A fabric of `nodes` nodes with `pods_per_node` pods and an outside
/// client; neighbours resolve as they are needed (the first packets of a
/// flow go through the kernel).
fn build(nodes: usize, pods_per_node: usize, tune: impl Fn(&mut Config)) -> Fabric {
    build_with(nodes, pods_per_node, &Options::default(), tune)
}

/// [`build`] with every neighbour pinned: every translated frame can leave
/// by redirect from the first one.
fn build_pinned(nodes: usize, pods_per_node: usize, tune: impl Fn(&mut Config)) -> Fabric {
    let options = Options {
        static_neighbours: true,
        ..Options::default()
    };
    build_with(nodes, pods_per_node, &options, tune)
}

fn build_with(
    nodes: usize,
    pods_per_node: usize,
    options: &Options,
    tune: impl Fn(&mut Config),
) -> Fabric {
    let shape = Shape {
        nodes,
        pods_per_node,
        outside_client: true,
    };
    Fabric::build(shape, options, tune).expect("fabric builds")
}

/// A TCP ClusterIP service (VIP `vip`, port `port`) over `backends`.
fn cluster_ip(vip: u16, port: u16, backends: &[PodRef], target_port: u16) -> Service {
    Service {
        protocol: Protocol::Tcp,
        cluster_ip: Some((vip, port)),
        node_port: None,
        backends: backends.to_vec(),
        target_port,
        snat_remote: false,
    }
}

/// A TCP NodePort service (`externalTrafficPolicy: Cluster`) over `backends`.
fn node_port(port: u16, backends: &[PodRef], target_port: u16) -> Service {
    Service {
        protocol: Protocol::Tcp,
        cluster_ip: None,
        node_port: Some(port),
        backends: backends.to_vec(),
        target_port,
        snat_remote: true,
    }
}

fn program(f: &mut Fabric, family: Family, service: &Service) -> Programmed {
    f.add_service(family, service)
        .unwrap_or_else(|e| panic!("{family:?}: programming {service:?}: {e}"))
}

/// `count` HTTP GETs from `client` to `addr`; answers per backend index.
fn http_spread(
    f: &Fabric,
    client: PodRef,
    addr: SocketAddr,
    count: usize,
    backends: usize,
) -> Vec<usize> {
    let mut per_backend = vec![0; backends];
    for i in 0..count {
        let answer = http_get(f.pod_netns(client), addr, "/", TIMEOUT)
            .unwrap_or_else(|e| panic!("GET {i} of {count} to {addr}: {e}"));
        assert_eq!(answer.status, 200, "{answer:?}");
        let name = answer.body.trim_end();
        let backend = (0..backends)
            .find(|&b| backend_name(b) == name)
            .unwrap_or_else(|| panic!("answered by {name:?}"));
        per_backend[backend] += 1;
    }
    per_backend
}

/// `count` UDP requests from `client` to `addr` (connected sockets: only an
/// answer from `addr` counts); answers per backend index.
fn udp_spread(
    f: &Fabric,
    client: PodRef,
    addr: SocketAddr,
    count: usize,
    backends: usize,
) -> Vec<usize> {
    let answers = EchoClient::new(f.pod_netns(client))
        .with_timeout(TIMEOUT)
        .udp(addr, count)
        .unwrap_or_else(|e| panic!("UDP through {addr}: {e}"));
    let mut per_backend = vec![0; backends];
    for answer in answers {
        let backend = (0..backends)
            .find(|&b| backend_name(b) == answer.server)
            .unwrap_or_else(|| panic!("answered by {:?}", answer.server));
        per_backend[backend] += 1;
    }
    per_backend
}

#[test]
fn the_rig_routes_pods_and_the_outside_client_without_xlb() {
    let shape = Shape {
        nodes: 2,
        pods_per_node: 2,
        outside_client: true,
    };
    let mut f = Fabric::build_plain(shape, &Options::default()).expect("rig builds");
    let (here, there) = (PodRef::new(0, 0), PodRef::new(1, 1));
    for family in Family::ALL {
        f.serve_peer_echo(here, family, ECHO_PORT, "here")
            .expect("server");
        f.serve_peer_echo(there, family, ECHO_PORT, "there")
            .expect("server");
        // Across the fabric, with the pods' partial checksums.
        let from = f.pod_socket(here, family, 0).ip();
        let to = f.pod_socket(there, family, ECHO_PORT);
        let mut session = PeerSession::open(f.pod_netns(here), to, TIMEOUT).expect("pod to pod");
        assert_eq!(session.seen_as().ip(), from);
        let started = Instant::now();
        session
            .transfer(&payload(2 << 20))
            .expect("2 MiB both ways");
        report!(
            "{family:?}: without xlb, 2 MiB both ways pod to pod across nodes in {:.2?}",
            started.elapsed()
        );
        session.close().expect("an orderly close");
        // From outside to a pod of node 0.
        let client = f.outside().client.clone();
        let to = f.pod_socket(here, family, ECHO_PORT);
        let session = PeerSession::open(&client.netns, to, TIMEOUT).expect("client to pod");
        assert_eq!(session.seen_as(), session.local_addr());
        assert_eq!(session.seen_as().ip(), client.ip(family));
        session.close().expect("an orderly close");
    }
}

#[test]
fn a_pod_reaches_two_backend_pods_of_its_node_through_a_cluster_ip() {
    let started = Instant::now();
    let mut f = build(1, 4, |_| {});
    let client = PodRef::new(0, 0);
    let backends = [PodRef::new(0, 1), PodRef::new(0, 2)];
    let bystander = PodRef::new(0, 3);
    let base = f.counters(0).expect("counters");
    for family in Family::ALL {
        for (i, &b) in backends.iter().enumerate() {
            f.serve_http(b, family, HTTP_PORT, &backend_name(i))
                .expect("http");
            f.serve_udp_echo(b, family, HTTP_PORT, &backend_name(i))
                .expect("udp");
            f.serve_peer_echo(b, family, ECHO_PORT, &backend_name(i))
                .expect("echo");
        }
        let http = program(
            &mut f,
            family,
            &cluster_ip(1, SERVICE_PORT, &backends, HTTP_PORT),
        );
        let udp = Service {
            protocol: Protocol::Udp,
            ..cluster_ip(1, SERVICE_PORT, &backends, HTTP_PORT)
        };
        let udp = program(&mut f, family, &udp);
        let echo = program(
            &mut f,
            family,
            &cluster_ip(2, ECHO_PORT, &backends, ECHO_PORT),
        );

        let vip = http.cluster_ip.expect("a ClusterIP");
        let spread = http_spread(&f, client, vip, HTTP_REQUESTS, backends.len());
        report!("{family:?}: {HTTP_REQUESTS} GETs through {vip}, per backend {spread:?}");
        assert!(spread.iter().all(|&n| n > 0), "{family:?}: {spread:?}");

        let vip = echo.cluster_ip.expect("a ClusterIP");
        let seen_as = f.pod_socket(client, family, 0).ip();
        let mut session = PeerSession::open(f.pod_netns(client), vip, TIMEOUT).expect("session");
        assert_eq!(
            session.seen_as(),
            SocketAddr::new(seen_as, session.local_addr().port()),
            "{family:?}: a pod's source is kept"
        );
        session.exchange(b"ping").expect("echo");
        session.close().expect("an orderly close");
        bulk_from_pod(&f, client, vip);

        let vip = udp.cluster_ip.expect("a ClusterIP");
        let spread = udp_spread(&f, client, vip, UDP_REQUESTS, backends.len());
        report!("{family:?}: {UDP_REQUESTS} UDP requests through {vip}, per backend {spread:?}");
        assert!(spread.iter().all(|&n| n > 0), "{family:?}: {spread:?}");

        // A backend pod with nothing on the port: its "port unreachable"
        // reaches the client translated back (from the ClusterIP, quoting
        // the request as sent), so the connected socket is refused at once
        // rather than waiting out its timeout.
        let closed = Service {
            protocol: Protocol::Udp,
            ..cluster_ip(3, SERVICE_PORT, &backends[..1], CLOSED_PORT)
        };
        let vip = program(&mut f, family, &closed)
            .cluster_ip
            .expect("a ClusterIP");
        let refused = EchoClient::new(f.pod_netns(client))
            .with_timeout(TIMEOUT)
            .udp(vip, 1);
        assert!(
            matches!(&refused, Err(Error::Io { source, .. })
                if source.kind() == std::io::ErrorKind::ConnectionRefused),
            "{family:?}: UDP to {vip} without a listener: {refused:?}"
        );

        // Pod to pod, no service: passed untouched.
        let direct = f.pod_socket(backends[0], family, HTTP_PORT);
        let answer = http_get(f.pod_netns(bystander), direct, "/", TIMEOUT).expect("direct GET");
        assert_eq!(answer.body, "b0\n");
    }
    let counted = f.counters(0).expect("counters").since(&base);
    report!("node 0: {counted:?}");
    assert_eq!(counted.ct_event(CtEvent::SnatExhausted), 0, "{counted:?}");
    report!("one node, four pods: done in {:.2?}", started.elapsed());
}

/// [`bulk`] from a pod whose source the backend must see unchanged.
fn bulk_from_pod(f: &Fabric, client: PodRef, vip: SocketAddr) -> String {
    let family = if vip.is_ipv4() {
        Family::V4
    } else {
        Family::V6
    };
    let data = payload(BULK_BYTES);
    let started = Instant::now();
    let mut session = PeerSession::open(f.pod_netns(client), vip, TIMEOUT).expect("bulk session");
    assert_eq!(
        session.seen_as(),
        SocketAddr::new(
            f.pod_socket(client, family, 0).ip(),
            session.local_addr().port()
        ),
        "{family:?}: the backend sees the client pod"
    );
    session.transfer(&data).expect("10 MB both ways");
    let server = session.server().to_owned();
    session.close().expect("an orderly close");
    let elapsed = started.elapsed();
    report!(
        "{family:?}: {} MiB each way through {vip} in {elapsed:.2?} ({:.0} Mbit/s each way), served by {server}",
        BULK_BYTES >> 20,
        (BULK_BYTES * 8) as f64 / elapsed.as_secs_f64() / 1e6
    );
    server
}

#[test]
fn a_pod_reaches_backend_pods_of_the_other_node_through_a_cluster_ip() {
    let started = Instant::now();
    let mut f = build(2, 2, |_| {});
    let client = PodRef::new(0, 0);
    let backends = [PodRef::new(1, 0), PodRef::new(1, 1)];
    let base = [
        f.counters(0).expect("counters"),
        f.counters(1).expect("counters"),
    ];
    for family in Family::ALL {
        for (i, &b) in backends.iter().enumerate() {
            f.serve_http(b, family, HTTP_PORT, &backend_name(i))
                .expect("http");
            f.serve_udp_echo(b, family, HTTP_PORT, &backend_name(i))
                .expect("udp");
            f.serve_peer_echo(b, family, ECHO_PORT, &backend_name(i))
                .expect("echo");
        }
        let http = program(
            &mut f,
            family,
            &cluster_ip(1, SERVICE_PORT, &backends, HTTP_PORT),
        );
        let udp = Service {
            protocol: Protocol::Udp,
            ..cluster_ip(1, SERVICE_PORT, &backends, HTTP_PORT)
        };
        let udp = program(&mut f, family, &udp);
        let echo = program(
            &mut f,
            family,
            &cluster_ip(2, ECHO_PORT, &backends, ECHO_PORT),
        );

        let vip = http.cluster_ip.expect("a ClusterIP");
        let spread = http_spread(&f, client, vip, HTTP_REQUESTS_ACROSS, backends.len());
        report!(
            "{family:?}: {HTTP_REQUESTS_ACROSS} GETs across nodes through {vip}, per backend {spread:?}"
        );
        assert!(spread.iter().all(|&n| n > 0), "{family:?}: {spread:?}");

        bulk_from_pod(&f, client, echo.cluster_ip.expect("a ClusterIP"));

        let vip = udp.cluster_ip.expect("a ClusterIP");
        let spread = udp_spread(&f, client, vip, UDP_REQUESTS, backends.len());
        report!(
            "{family:?}: {UDP_REQUESTS} UDP requests across nodes through {vip}, per backend {spread:?}"
        );
        assert!(spread.iter().all(|&n| n > 0), "{family:?}: {spread:?}");
    }
    let counted = [
        f.counters(0).expect("counters").since(&base[0]),
        f.counters(1).expect("counters").since(&base[1]),
    ];
    report!("node 0: {:?}\nnode 1: {:?}", counted[0], counted[1]);
    // Node 1 only forwards what node 0 translated, and the replies.
    assert_eq!(counted[1].ct_event(CtEvent::Created), 0, "{:?}", counted[1]);
    assert!(
        counted[0].ct_event(CtEvent::Created) > 0,
        "{:?}",
        counted[0]
    );
    report!("two nodes: done in {:.2?}", started.elapsed());
}

/// The outside client's connection to the NodePort (on node 0's uplink) of
/// a service whose only backend is pod 0 of node 1: the backend sees node
/// 0's source-NAT address and a port of the range, 1 MiB goes both ways.
fn remote_node_port(f: &mut Fabric, family: Family) {
    let remote = PodRef::new(1, 0);
    f.serve_peer_echo(remote, family, ECHO_PORT, "remote")
        .expect("echo");
    program(
        f,
        family,
        &node_port(NODE_PORT_REMOTE, &[remote], ECHO_PORT),
    );
    let client = f.outside().client.clone();
    let to = SocketAddr::new(f.outside().uplink.ip(family), NODE_PORT_REMOTE);
    let snat = f
        .snat_source(0, family)
        .expect("node 0 has a source-NAT address");
    let snat_ports = Config::default().snat_port_min..=Config::default().snat_port_max;
    let base = f.counters(0).expect("counters");
    let mut session = PeerSession::open(&client.netns, to, TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "{family:?}: NodePort {to} to a remote backend: {e}; node 0 counted {:?}",
            f.counters(0).map(|c| c.since(&base))
        )
    });
    assert_eq!(session.server(), "remote");
    report!(
        "{family:?}: {} → {to}: the remote backend sees {}",
        session.local_addr(),
        session.seen_as()
    );
    assert_eq!(
        session.seen_as().ip(),
        snat,
        "{family:?}: source NAT to node 0"
    );
    assert!(
        snat_ports.contains(&session.seen_as().port()),
        "{family:?}: {}",
        session.seen_as()
    );
    session
        .transfer(&payload(1 << 20))
        .expect("1 MiB both ways");
    session.close().expect("an orderly close");
    let counted = f.counters(0).expect("counters").since(&base);
    report!("{family:?}: node 0 after the remote NodePort: {counted:?}");
    assert!(counted.ct_event(CtEvent::SnatAllocated) >= 1, "{counted:?}");
}

#[test]
fn an_outside_client_reaches_a_remote_backend_through_a_node_port_with_source_nat() {
    let mut f = build_pinned(2, 1, |_| {});
    for family in Family::ALL {
        remote_node_port(&mut f, family);
    }
}

#[test]
fn the_first_packets_of_a_source_nat_flow_go_through_while_neighbours_resolve() {
    // Nothing pinned: node 0 does not know node 1's MAC when the first SYN
    // comes, so xdp_lb translates it and hands it to the kernel.
    let mut f = build(2, 1, |_| {});
    for family in Family::ALL {
        remote_node_port(&mut f, family);
    }
}

#[test]
fn an_outside_client_keeps_its_source_to_a_local_backend_of_a_node_port() {
    let mut f = build_pinned(2, 1, |_| {});
    let local = PodRef::new(0, 0);
    for family in Family::ALL {
        f.serve_peer_echo(local, family, ECHO_PORT, "local")
            .expect("echo");
        program(
            &mut f,
            family,
            &node_port(NODE_PORT_LOCAL, &[local], ECHO_PORT),
        );
        let client = f.outside().client.clone();
        let to = SocketAddr::new(f.outside().uplink.ip(family), NODE_PORT_LOCAL);
        let base = f.counters(0).expect("counters");
        let mut session = PeerSession::open(&client.netns, to, TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "{family:?}: NodePort {to} to a local backend: {e}; node 0 counted {:?}",
                f.counters(0).map(|c| c.since(&base))
            )
        });
        assert_eq!(session.server(), "local");
        assert_eq!(
            session.seen_as(),
            session.local_addr(),
            "{family:?}: a local backend sees the client's own address and port"
        );
        session
            .transfer(&payload(1 << 20))
            .expect("1 MiB both ways");
        session.close().expect("an orderly close");
        let counted = f.counters(0).expect("counters").since(&base);
        report!("{family:?}: node 0 after the local NodePort: {counted:?}");
        assert_eq!(counted.ct_event(CtEvent::SnatAllocated), 0, "{counted:?}");
    }
}

/// A NodePort whose backend is node 0 itself (a hostNetwork pod's endpoint:
/// the node's own address): `xdp_lb` hands the translated request to the
/// node's stack, and the answer, which leaves through the stack, is
/// translated back at the uplink's egress (`tc_lb_egress`).
#[test]
fn an_outside_client_reaches_a_host_network_backend_through_a_node_port() {
    let mut f = build_pinned(1, 1, |_| {});
    for family in Family::ALL {
        let host = f
            .serve_http_on_node(0, family, HOST_PORT, "host")
            .expect("http on the node");
        let service = program(
            &mut f,
            family,
            &node_port(NODE_PORT_HOST, &[PodRef::new(0, 0)], HTTP_PORT),
        );
        f.use_node_backend(&service, Protocol::Tcp, 0, host)
            .expect("the node as the backend");
        let to = service.node_ports[0][0];
        let base = f.counters(0).expect("counters");
        let client = f.outside().client.clone();
        for i in 0..HOST_REQUESTS {
            let answer = http_get(&client.netns, to, "/", TIMEOUT).unwrap_or_else(|e| {
                panic!(
                    "{family:?}: GET {i} through {to} to the node itself: {e}; node 0 counted {:?}",
                    f.counters(0).map(|c| c.since(&base))
                )
            });
            assert_eq!(answer.body, "host\n");
        }
        let counted = f.counters(0).expect("counters").since(&base);
        report!("{family:?}: node 0 after the NodePort to itself: {counted:?}");
        assert!(
            counted.verdict(Verdict::ForwardReply) > 0,
            "{family:?}: replies translated at the uplink's egress: {counted:?}"
        );
    }
}

/// Node 0 itself (a hostNetwork pod, any process of the node) reaches
/// ClusterIPs: its requests are balanced at its uplink's egress
/// (`tc_lb_uplink`), to a pod of its own, a pod of node 1, and node 0 itself
/// (whose requests to itself go back in through the uplink, source-NATed to
/// the hairpin address so that the answers leave through the uplink too).
#[test]
fn the_node_itself_reaches_cluster_ips() {
    let mut f = build_pinned(2, 1, |_| {});
    let (local, remote) = (PodRef::new(0, 0), PodRef::new(1, 0));
    for family in Family::ALL {
        f.serve_http(local, family, HTTP_PORT, "local")
            .expect("http");
        f.serve_http(remote, family, HTTP_PORT, "remote")
            .expect("http");
        f.serve_udp_echo(local, family, HTTP_PORT, "local")
            .expect("udp");
        let to_local = program(
            &mut f,
            family,
            &cluster_ip(1, SERVICE_PORT, &[local], HTTP_PORT),
        );
        let to_remote = program(
            &mut f,
            family,
            &cluster_ip(2, SERVICE_PORT, &[remote], HTTP_PORT),
        );
        let to_node = program(
            &mut f,
            family,
            &cluster_ip(3, SERVICE_PORT, &[local], HTTP_PORT),
        );
        let host = f
            .serve_http_on_node(0, family, HOST_PORT, "node")
            .expect("http on the node");
        f.use_node_backend(&to_node, Protocol::Tcp, 0, host)
            .expect("the node as the backend");
        let udp = Service {
            protocol: Protocol::Udp,
            ..cluster_ip(4, SERVICE_PORT, &[local], HTTP_PORT)
        };
        let udp = program(&mut f, family, &udp);

        // As on a real node (its default route), the ClusterIPs and the
        // hairpin address are reached through a neighbour that answers (here
        // node 1, across the fabric): the kernel resolves the next hop
        // before the egress hook sees the packet, which then sends it to
        // the backend itself.
        let node = f.nodes[0].netns.clone();
        let gateway = f.fabric[1].ip(family).to_string();
        let hairpin = hairpin_source(family).to_string();
        let vips = [&to_local, &to_remote, &to_node, &udp]
            .map(|s| s.cluster_ip.expect("a ClusterIP").ip().to_string());
        for to in vips.iter().chain([&hairpin]) {
            node.exec("ip", &["route", "add", to, "via", &gateway])
                .expect("a route to the ClusterIP");
        }
        let base = f.counters(0).expect("counters");
        for (service, name) in [
            (&to_local, "local"),
            (&to_remote, "remote"),
            (&to_node, "node"),
        ] {
            let vip = service.cluster_ip.expect("a ClusterIP");
            for i in 0..NODE_REQUESTS {
                let answer = http_get(&node, vip, "/", TIMEOUT).unwrap_or_else(|e| {
                    panic!(
                        "{family:?}: GET {i} from node 0 to {vip} ({name}): {e}; node 0 counted {:?}",
                        f.counters(0).map(|c| c.since(&base))
                    )
                });
                assert_eq!(answer.body, format!("{name}\n"), "{family:?}: {vip}");
            }
        }
        let vip = udp.cluster_ip.expect("a ClusterIP");
        let answers = EchoClient::new(&node)
            .with_timeout(TIMEOUT)
            .udp(vip, UDP_REQUESTS)
            .unwrap_or_else(|e| panic!("{family:?}: UDP from node 0 to {vip}: {e}"));
        assert!(answers.iter().all(|a| a.server == "local"), "{answers:?}");
        let counted = f.counters(0).expect("counters").since(&base);
        report!("{family:?}: node 0 after reaching ClusterIPs itself: {counted:?}");
        // Balanced at the uplink (every connection's SYN at least), and the
        // requests to the node itself hairpin-NATed. (Not one flow per
        // request exactly: a UDP client may get the port of an earlier one,
        // whose flow then goes on.)
        assert!(
            counted.verdict(Verdict::ForwardToBackend) >= (3 * NODE_REQUESTS) as u64
                && counted.ct_event(CtEvent::SnatAllocated) >= NODE_REQUESTS as u64,
            "{family:?}: {counted:?}"
        );
    }
}

#[test]
fn a_pod_reaching_itself_through_its_service_gets_its_answers() {
    let mut f = build(1, 1, |_| {});
    let pod = PodRef::new(0, 0);
    for family in Family::ALL {
        f.serve_http(pod, family, HTTP_PORT, &backend_name(0))
            .expect("http");
        f.serve_udp_echo(pod, family, HTTP_PORT, &backend_name(0))
            .expect("udp");
        f.serve_peer_echo(pod, family, ECHO_PORT, &backend_name(0))
            .expect("echo");
        let http = program(
            &mut f,
            family,
            &cluster_ip(1, SERVICE_PORT, &[pod], HTTP_PORT),
        );
        let udp = Service {
            protocol: Protocol::Udp,
            ..cluster_ip(1, SERVICE_PORT, &[pod], HTTP_PORT)
        };
        let udp = program(&mut f, family, &udp);
        let echo = program(&mut f, family, &cluster_ip(2, ECHO_PORT, &[pod], ECHO_PORT));
        let base = f.counters(0).expect("counters");

        let spread = http_spread(&f, pod, http.cluster_ip.expect("ClusterIP"), 20, 1);
        assert_eq!(spread, [20]);
        let vip = echo.cluster_ip.expect("a ClusterIP");
        let mut session = PeerSession::open(f.pod_netns(pod), vip, TIMEOUT).expect("hairpin");
        report!(
            "{family:?}: hairpin: the pod sees itself as {}",
            session.seen_as()
        );
        assert_eq!(session.seen_as().ip(), hairpin_source(family), "{family:?}");
        session
            .transfer(&payload(1 << 20))
            .expect("1 MiB both ways");
        session.close().expect("an orderly close");
        let spread = udp_spread(&f, pod, udp.cluster_ip.expect("ClusterIP"), 10, 1);
        assert_eq!(spread, [10]);
        report!(
            "{family:?}: hairpin: {:?}",
            f.counters(0).expect("counters").since(&base)
        );
    }
}

#[test]
fn two_connections_from_one_source_port_to_two_cluster_ips_of_one_backend() {
    let mut f = build(1, 2, |_| {});
    let (client, backend) = (PodRef::new(0, 0), PodRef::new(0, 1));
    const SOURCE_PORT: u16 = 40_000;
    for family in Family::ALL {
        f.serve_peer_echo(backend, family, ECHO_PORT, "b0")
            .expect("echo");
        let first = program(
            &mut f,
            family,
            &cluster_ip(1, ECHO_PORT, &[backend], ECHO_PORT),
        );
        let second = program(
            &mut f,
            family,
            &cluster_ip(2, ECHO_PORT, &[backend], ECHO_PORT),
        );
        let base = f.counters(0).expect("counters");
        let local = f.pod_socket(client, family, SOURCE_PORT);
        let mut sessions: Vec<PeerSession> = [first, second]
            .iter()
            .map(|service| {
                let vip = service.cluster_ip.expect("a ClusterIP");
                PeerSession::open_from(f.pod_netns(client), Some(local), vip, TIMEOUT)
                    .unwrap_or_else(|e| panic!("{family:?}: from {local} to {vip}: {e}"))
            })
            .collect();
        let seen: Vec<SocketAddr> = sessions.iter().map(PeerSession::seen_as).collect();
        report!("{family:?}: two connections from {local}: the backend sees {seen:?}");
        assert_ne!(seen[0], seen[1], "{family:?}: the backend tells them apart");
        for (i, session) in sessions.iter_mut().enumerate() {
            assert_eq!(session.local_addr(), local);
            session
                .exchange(format!("connection {i}").as_bytes())
                .unwrap_or_else(|e| panic!("{family:?}: connection {i}: {e}"));
        }
        for session in sessions.iter_mut().rev() {
            session
                .transfer(&payload(256 << 10))
                .expect("256 KiB both ways");
        }
        for session in sessions {
            session.close().expect("an orderly close");
        }
        report!(
            "{family:?}: clash: {:?}",
            f.counters(0).expect("counters").since(&base)
        );
    }
}

#[test]
fn node_port_connections_past_the_snat_ports_are_refused_until_ports_free_up() {
    const PORTS: (u16, u16) = (61_000, 61_001);
    let mut f = build_pinned(2, 1, |config| {
        config.snat_port_min = PORTS.0;
        config.snat_port_max = PORTS.1;
        config.tcp_syn_timeout_s = 2;
        config.tcp_closing_timeout_s = 2;
        config.udp_timeout_s = 2;
    });
    let remote = PodRef::new(1, 0);
    for family in Family::ALL {
        f.serve_peer_echo(remote, family, ECHO_PORT, "remote")
            .expect("echo");
        program(
            &mut f,
            family,
            &node_port(NODE_PORT_REMOTE, &[remote], ECHO_PORT),
        );
        let client = f.outside().client.clone();
        let to = SocketAddr::new(f.outside().uplink.ip(family), NODE_PORT_REMOTE);
        let base = f.counters(0).expect("counters");

        let mut held: Vec<PeerSession> = (0..2)
            .map(|i| {
                PeerSession::open(&client.netns, to, TIMEOUT)
                    .unwrap_or_else(|e| panic!("{family:?}: connection {i} of 2: {e}"))
            })
            .collect();
        let mut ports: Vec<u16> = held.iter().map(|s| s.seen_as().port()).collect();
        ports.sort_unstable();
        assert_eq!(ports, [PORTS.0, PORTS.1], "{family:?}: both ports in use");

        let tried = Instant::now();
        let refused = PeerSession::open(&client.netns, to, TIMEOUT);
        let took = tried.elapsed();
        report!(
            "{family:?}: a third connection with both ports taken: {refused:?} after {took:.2?}"
        );
        match refused {
            Err(Error::Io { source, .. }) => assert_eq!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "{family:?}: refused by a reset, not dropped"
            ),
            other => panic!("{family:?}: the third connection was not refused: {other:?}"),
        }
        assert!(
            took < Duration::from_secs(1),
            "{family:?}: refused in {took:.2?}"
        );
        let counted = f.counters(0).expect("counters").since(&base);
        assert!(counted.ct_event(CtEvent::SnatExhausted) >= 1, "{counted:?}");
        assert!(counted.verdict(Verdict::RefuseReset) >= 1, "{counted:?}");

        // The held connections still work; then they close.
        for session in &mut held {
            session.exchange(b"still here").expect("a held connection");
        }
        for session in held {
            session.close().expect("an orderly close");
        }
        let closed = Instant::now();
        let mut attempts = 0;
        let again = wait_for(Duration::from_secs(20), "a free source-NAT port", || {
            attempts += 1;
            Ok(PeerSession::open(&client.netns, to, TIMEOUT).ok())
        })
        .unwrap_or_else(|e| panic!("{family:?}: {e}; {:?}", f.counters(0)));
        report!(
            "{family:?}: a new connection went through {:.2?} after the close ({attempts} attempts)",
            closed.elapsed()
        );
        assert!(PORTS.0 <= again.seen_as().port() && again.seen_as().port() <= PORTS.1);
        again.close().expect("an orderly close");
        report!(
            "{family:?}: exhaustion: {:?}",
            f.counters(0).expect("counters").since(&base)
        );
    }
}
