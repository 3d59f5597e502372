//! Golden packets, source NAT: where a reply would not come back through
//! this LB (or would come back ambiguous), the source of a new flow is
//! translated too, with a port of the source-NAT range, and the reply is
//! translated back on both ends:
//! - a **clash**: two frontends, one client port, one backend: the second
//!   flow keeps its address and gets another port, unless the first is
//!   closed at both ends, whose tuple it then takes over;
//! - a **remote backend** of a `snat_remote` service (NodePort with
//!   `externalTrafficPolicy: Cluster`): the source becomes the node's
//!   source-NAT address; a local backend keeps the client's source;
//! - a reply to a flow source-NATed to a NodePort's own address and port is
//!   a reply, not a request to the NodePort;
//! - **hairpin**: a client that lands on itself gets the hairpin address;
//! - an **exhausted** range refuses the flow (a reset) and counts it, and a
//!   port comes free when the flow holding it expires;
//! - **ICMP errors** about a source-NATed flow are translated at both quoted
//!   ends: a router's to the source-NAT address reaches the client, the
//!   client's about a reply reaches the backend.
//!
//! Every output frame is compared whole with one etherparse built.
mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use support::{
    frame::{ErrorKind, L4, Packet, TcpFlags, icmp_error, ip_packet},
    in_private_netns,
    lb::{
        BACKEND4_IDS, BACKEND6_IDS, CLIENT4, CLIENT6, DOWN_MAC, FROM_CLIENT, Lb, NODE4, ROUTER_MAC,
        ROUTER4, UP_MAC, VIP4, VIP6, XDP_REDIRECT, XDP_TX, backend4, backend6, mac_of,
    },
};
use xdp_lb::{AddressKind, Config, CtEvent, Frontend, Protocol, ServiceOptions, Verdict};

/// The node's source-NAT address toward the backends (`dn0`'s own).
const SNAT4: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 254);
/// A source-NAT range of its own, so the tests see it used.
const PORTS: (u16, u16) = (40100, 40163);
const NODE_PORT: u16 = 30080;
const TOO_BIG: ErrorKind = ErrorKind::TooBig { mtu: 1280 };

/// An LB with source-NAT settings: the range above and `SNAT4`.
fn lb() -> Lb {
    let lb = Lb::new();
    let config = lb.dp.config().expect("config");
    let mut lb = lb;
    lb.dp
        .set_config(&Config {
            snat_source_v4: SNAT4.octets(),
            snat_port_min: PORTS.0,
            snat_port_max: PORTS.1,
            ..config
        })
        .expect("config");
    lb
}

/// `request` as the LB sends it to `backend` from `source`.
fn to_backend(request: &Packet, source: SocketAddr, backend: SocketAddr) -> Vec<u8> {
    request
        .with_src(source)
        .with_dst(backend)
        .routed(DOWN_MAC, mac_of(backend.ip()))
        .bytes()
}

/// `reply` as the LB sends it back to `client` from `frontend`.
fn to_client(reply: &Packet, frontend: SocketAddr, client: SocketAddr) -> Vec<u8> {
    reply
        .with_src(frontend)
        .with_dst(client)
        .routed(UP_MAC, mac_of(client.ip()))
        .bytes()
}

/// The backend's answer to a request it saw from `seen_source`.
fn answer(request: &Packet, backend: SocketAddr, seen_source: SocketAddr) -> Packet {
    Packet {
        src_mac: mac_of(backend.ip()),
        dst_mac: DOWN_MAC,
        src: backend,
        dst: seen_source,
        l4: match request.l4 {
            L4::Tcp(_) => L4::Tcp(TcpFlags::SYN_ACK),
            udp @ L4::Udp { .. } => udp,
        },
        payload: b"answer".to_vec(),
        ..request.clone()
    }
}

/// The source the flow of `request` was given, read from conntrack; checked
/// to lie in the range.
fn snat_source(lb: &Lb, request: &Packet) -> SocketAddr {
    let tracked = lb
        .dp
        .tracked_flow(&request.flow())
        .expect("conntrack")
        .expect("tracked");
    let source = tracked.snat.expect("source-NATed");
    assert!(
        (PORTS.0..=PORTS.1).contains(&source.port()),
        "{source} is outside the range {PORTS:?}"
    );
    source
}

/// Each family's VIP, with its first backend and that backend's ID.
fn vips_and_first_backends() -> [(IpAddr, SocketAddr, u32); 2] {
    [
        (IpAddr::from(VIP4), backend4(0), BACKEND4_IDS[0]),
        (IpAddr::from(VIP6), backend6(0), BACKEND6_IDS[0]),
    ]
}

/// The client of `vip`'s family, from port 40000.
fn client_port_40000(vip: IpAddr) -> SocketAddr {
    let client: IpAddr = if vip.is_ipv4() {
        CLIENT4.into()
    } else {
        CLIENT6.into()
    };
    SocketAddr::new(client, 40000)
}

fn service(lb: &mut Lb, id: u32, frontend: SocketAddr, table: &[u32], snat_remote: bool) {
    lb.dp.swap_table(id, table).expect("table");
    lb.dp
        .upsert_service(
            &Frontend::new(frontend, Protocol::Tcp),
            id,
            &ServiceOptions {
                snat_remote,
                ..ServiceOptions::default()
            },
        )
        .expect("service");
}

/// Declares `NODE4` a node address and puts service 1 on its `NODE_PORT`,
/// every slot on the first backend, with `snat_remote`; returns the frontend.
fn node_port_service(lb: &mut Lb) -> SocketAddr {
    lb.dp
        .set_address(NODE4.into(), AddressKind::Node)
        .expect("node address");
    let node_port = SocketAddr::from((NODE4, NODE_PORT));
    service(lb, 1, node_port, &[BACKEND4_IDS[0]; 251], true);
    node_port
}

#[test]
fn a_clash_of_translated_tuples_remaps_the_second_flows_source_port() {
    for (vip, backend, id) in vips_and_first_backends() {
        // A namespace per family: the fixture's interfaces are made once in one.
        in_private_netns(|| {
            let mut lb = lb();
            let (web, admin) = (SocketAddr::new(vip, 80), SocketAddr::new(vip, 81));
            service(&mut lb, 1, web, &[id; 251], false);
            service(&mut lb, 2, admin, &[id; 251], false);
            let client = client_port_40000(vip);
            let first = Packet::tcp(FROM_CLIENT, client, web, TcpFlags::SYN);
            let second = Packet::tcp(FROM_CLIENT, client, admin, TcpFlags::SYN);

            let out = lb.send(&first.bytes(), lb.up0);
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, to_backend(&first, client, backend)),
                "the first flow keeps its source"
            );
            let out = lb.send(&second.bytes(), lb.up0);
            let remapped = snat_source(&lb, &second);
            assert_eq!(remapped.ip(), client.ip(), "a clash keeps the address");
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, to_backend(&second, remapped, backend))
            );

            // Each reply finds its own flow, and goes back from its frontend
            // to the client's own port.
            for (request, seen, frontend) in [(&first, client, web), (&second, remapped, admin)] {
                let reply = answer(request, backend, seen);
                let out = lb.send(&reply.bytes(), lb.dn0);
                let expected = to_client(&reply, frontend, client);
                assert_eq!((out.action, out.packet), (XDP_REDIRECT, expected));
            }
            lb.assert_ct(&[
                (CtEvent::Created, 2),
                (CtEvent::SnatAllocated, 1),
                (CtEvent::ReplyHit, 2),
            ]);
            lb.assert_verdicts(&[(Verdict::ForwardToBackend, 2), (Verdict::ForwardReply, 2)]);
        });
    }
}

/// A flow closed at both ends (a FIN each way) no longer holds its reply
/// tuple: the next flow from the same client port to the same backend takes
/// it over with the client's own source, as netfilter reuses the tuple of a
/// connection in TIME_WAIT. Remapping it instead spent the range's ports on
/// every reuse of a client port: a client opening thousands of short
/// connections a second across services exhausted it and was refused. A
/// half-closed flow (the client's FIN only) still holds it: the backend may
/// go on sending.
#[test]
fn a_closed_flow_gives_its_reply_tuple_to_the_next_flow_and_a_half_closed_one_does_not() {
    for (vip, backend, id) in vips_and_first_backends() {
        in_private_netns(|| {
            let mut lb = lb();
            let frontends = [80, 81, 82].map(|port| SocketAddr::new(vip, port));
            for (id_of_service, frontend) in (1..).zip(frontends) {
                service(&mut lb, id_of_service, frontend, &[id; 251], false);
            }
            let [web, admin, api] = frontends;
            let client = client_port_40000(vip);
            let first = Packet::tcp(FROM_CLIENT, client, web, TcpFlags::SYN);
            let out = lb.send(&first.bytes(), lb.up0);
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, to_backend(&first, client, backend))
            );
            let client_fin = Packet::tcp(FROM_CLIENT, client, web, TcpFlags::FIN_ACK);
            let out = lb.send(&client_fin.bytes(), lb.up0);
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, to_backend(&client_fin, client, backend))
            );

            // Half-closed: a clash, remapped.
            let second = Packet::tcp(FROM_CLIENT, client, admin, TcpFlags::SYN);
            let out = lb.send(&second.bytes(), lb.up0);
            let remapped = snat_source(&lb, &second);
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, to_backend(&second, remapped, backend))
            );

            // The backend's FIN closes the first flow at both ends.
            let backend_fin = Packet {
                l4: L4::Tcp(TcpFlags::FIN_ACK),
                ..answer(&first, backend, client)
            };
            let out = lb.send(&backend_fin.bytes(), lb.dn0);
            let expected = to_client(&backend_fin, web, client);
            assert_eq!((out.action, out.packet), (XDP_REDIRECT, expected));
            let closed = lb.dp.tracked_flow(&first.flow()).expect("conntrack");
            assert!(
                closed.is_some_and(|t| t.client_closed && t.backend_closed),
                "{closed:?}"
            );

            // Closed: the third flow keeps the client's own source, and the
            // backend's answers on the tuple are the third flow's.
            let third = Packet::tcp(FROM_CLIENT, client, api, TcpFlags::SYN);
            let out = lb.send(&third.bytes(), lb.up0);
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, to_backend(&third, client, backend)),
                "the closed flow's tuple is taken over"
            );
            let reply = answer(&third, backend, client);
            let out = lb.send(&reply.bytes(), lb.dn0);
            let expected = to_client(&reply, api, client);
            assert_eq!((out.action, out.packet), (XDP_REDIRECT, expected));
            lb.assert_ct(&[
                (CtEvent::Created, 3),
                (CtEvent::Hit, 1),
                (CtEvent::SnatAllocated, 1),
                (CtEvent::ReplyHit, 2),
            ]);
        });
    }
}

#[test]
fn a_remote_backend_of_a_nodeport_gets_the_nodes_source_and_a_local_one_the_clients() {
    in_private_netns(|| {
        let mut lb = lb();
        let local = backend4(1);
        lb.dp
            .put_backend_on_node(BACKEND4_IDS[1], local, 1, true)
            .expect("local backend");
        let node_port = node_port_service(&mut lb);
        let client = SocketAddr::from((CLIENT4, 41000));
        let request = Packet::tcp(FROM_CLIENT, client, node_port, TcpFlags::SYN);

        let out = lb.send(&request.bytes(), lb.up0);
        let source = snat_source(&lb, &request);
        assert_eq!(source.ip(), IpAddr::from(SNAT4));
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&request, source, backend4(0)))
        );
        let reply = answer(&request, backend4(0), source);
        let out = lb.send(&reply.bytes(), lb.dn0);
        let expected = to_client(&reply, node_port, client);
        assert_eq!((out.action, out.packet), (XDP_REDIRECT, expected));

        // The same service, its table now on the local backend: no source NAT.
        lb.dp.swap_table(1, &[BACKEND4_IDS[1]; 251]).expect("table");
        let other = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT4, 41001)),
            node_port,
            TcpFlags::SYN,
        );
        let out = lb.send(&other.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&other, other.src, local))
        );
        let tracked = lb.dp.tracked_flow(&other.flow()).unwrap().expect("tracked");
        assert_eq!(tracked.snat, None);
        lb.assert_ct(&[
            (CtEvent::Created, 2),
            (CtEvent::SnatAllocated, 1),
            (CtEvent::ReplyHit, 1),
        ]);
    });
}

/// A reply to a flow source-NATed to a node address and a port a NodePort
/// also listens on is translated back as a reply, not balanced as a request
/// to that NodePort: on a node address the reply direction comes first, and
/// a service found there is never taken for one on a VIP-only address
/// (`NODE_FILTER`).
#[test]
fn a_reply_to_a_nodeports_own_address_and_port_is_a_reply_not_a_request() {
    in_private_netns(|| {
        let mut lb = lb();
        let config = lb.dp.config().expect("config");
        lb.dp
            .set_config(&Config {
                snat_source_v4: NODE4.octets(),
                snat_port_min: NODE_PORT,
                snat_port_max: NODE_PORT,
                ..config
            })
            .expect("config");
        let node_port = node_port_service(&mut lb);
        let client = SocketAddr::from((CLIENT4, 41000));
        let request = Packet::tcp(FROM_CLIENT, client, node_port, TcpFlags::SYN);
        let out = lb.send(&request.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&request, node_port, backend4(0))),
            "source-NATed to the NodePort's own address and port"
        );
        let reply = answer(&request, backend4(0), node_port);
        let out = lb.send(&reply.bytes(), lb.dn0);
        let expected = to_client(&reply, node_port, client);
        assert_eq!((out.action, out.packet), (XDP_REDIRECT, expected));
        lb.assert_ct(&[
            (CtEvent::Created, 1),
            (CtEvent::SnatAllocated, 1),
            (CtEvent::ReplyHit, 1),
        ]);
    });
}

#[test]
fn a_client_landing_on_itself_gets_the_hairpin_source() {
    for (vip, backend, id, hairpin) in [
        (
            IpAddr::from(VIP4),
            backend4(0),
            BACKEND4_IDS[0],
            IpAddr::from(Ipv4Addr::new(169, 254, 42, 1)),
        ),
        (
            IpAddr::from(VIP6),
            backend6(0),
            BACKEND6_IDS[0],
            IpAddr::from(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0xa9fe, 0x2a01)),
        ),
    ] {
        in_private_netns(|| {
            let mut lb = lb();
            let frontend = SocketAddr::new(vip, 80);
            service(&mut lb, 1, frontend, &[id; 251], false);
            // The backend itself calls the service, from behind `dn0`.
            let itself = SocketAddr::new(backend.ip(), 45000);
            let mut request = Packet::tcp(FROM_CLIENT, itself, frontend, TcpFlags::SYN);
            request.src_mac = mac_of(backend.ip());
            request.dst_mac = DOWN_MAC;

            let out = lb.send(&request.bytes(), lb.dn0);
            let source = snat_source(&lb, &request);
            assert_eq!(source.ip(), hairpin, "the default hairpin source");
            assert_eq!(
                (out.action, out.packet),
                (XDP_TX, to_backend(&request, source, backend)),
                "back out where it came in"
            );
            let reply = answer(&request, backend, source);
            let out = lb.send(&reply.bytes(), lb.dn0);
            let expected = reply
                .with_src(frontend)
                .with_dst(itself)
                .routed(DOWN_MAC, mac_of(backend.ip()))
                .bytes();
            assert_eq!((out.action, out.packet), (XDP_TX, expected));
        });
    }
}

#[test]
fn an_exhausted_range_refuses_new_flows_until_a_port_expires() {
    in_private_netns(|| {
        let mut lb = lb();
        let config = lb.dp.config().expect("config");
        // One port: the second flow finds it taken.
        lb.dp
            .set_config(&Config {
                snat_port_min: PORTS.0,
                snat_port_max: PORTS.0,
                ..config
            })
            .expect("config");
        let node_port = node_port_service(&mut lb);
        let request = |port| {
            Packet::tcp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT4, port)),
                node_port,
                TcpFlags::SYN,
            )
        };

        let first = request(42000);
        assert_eq!(lb.send(&first.bytes(), lb.up0).action, XDP_REDIRECT);
        assert_eq!(snat_source(&lb, &first).port(), PORTS.0);
        let second = request(42001);
        let out = lb.send(&second.bytes(), lb.up0);
        assert_eq!(out.action, XDP_TX, "refused with a reset");
        assert!(lb.dp.tracked_flow(&second.flow()).unwrap().is_none());
        lb.assert_ct(&[
            (CtEvent::Created, 1),
            (CtEvent::SnatAllocated, 1),
            (CtEvent::SnatExhausted, 1),
        ]);
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1), (Verdict::RefuseReset, 1)]);

        // The first flow expires (a SYN timeout of 0 s has always passed):
        // its port is free for the next flow, without the collector.
        lb.dp
            .set_config(&Config {
                tcp_syn_timeout_s: 0,
                ..lb.dp.config().expect("config")
            })
            .expect("config");
        let third = request(42002);
        let out = lb.send(&third.bytes(), lb.up0);
        let source = snat_source(&lb, &third);
        assert_eq!(source.port(), PORTS.0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&third, source, backend4(0)))
        );
    });
}

/// A router's "fragmentation needed" about a source-NATed request, sent to
/// the source-NAT address, reaches the client with the quote as the client
/// sent it (both ends translated back) and the client as its destination.
fn router_error_about_a_source_natted_request(snat_is_a_node_address: bool) {
    in_private_netns(|| {
        let mut lb = lb();
        if snat_is_a_node_address {
            // An error to a node address is first taken for one about a
            // reply: no flow has that key, so it is tried as a request's.
            lb.dp
                .set_address(SNAT4.into(), AddressKind::Node)
                .expect("address");
        }
        let node_port = node_port_service(&mut lb);
        let client = SocketAddr::from((CLIENT4, 41000));
        let request = Packet::tcp(FROM_CLIENT, client, node_port, TcpFlags::SYN);
        assert_eq!(lb.send(&request.bytes(), lb.up0).action, XDP_REDIRECT);
        let source = snat_source(&lb, &request);
        let input = icmp_error(
            (ROUTER_MAC, DOWN_MAC),
            ROUTER4.into(),
            source.ip(),
            64,
            TOO_BIG,
            &ip_packet(&to_backend(&request, source, backend4(0))),
        );
        let out = lb.send(&input, lb.dn0);
        let as_sent = request.routed(DOWN_MAC, mac_of(backend4(0).ip()));
        let expected = icmp_error(
            (UP_MAC, mac_of(client.ip())),
            ROUTER4.into(),
            client.ip(),
            63,
            TOO_BIG,
            &ip_packet(&as_sent.bytes()),
        );
        assert_eq!((out.action, out.packet), (XDP_REDIRECT, expected));
        lb.assert_verdicts(&[
            (Verdict::ForwardToBackend, 1),
            (Verdict::ForwardIcmpErrorToClient, 1),
        ]);
    });
}

#[test]
fn a_routers_error_about_a_source_natted_request_reaches_the_client() {
    router_error_about_a_source_natted_request(false);
}

#[test]
fn a_routers_error_to_a_source_nat_address_that_is_a_node_address_reaches_the_client() {
    router_error_about_a_source_natted_request(true);
}

/// The client's "fragmentation needed" about a reply of a source-NATed flow
/// reaches the backend quoting the reply as the backend sent it: to the
/// source-NAT address and port.
#[test]
fn a_clients_error_about_a_source_natted_reply_reaches_the_backend() {
    in_private_netns(|| {
        let mut lb = lb();
        let node_port = node_port_service(&mut lb);
        let client = SocketAddr::from((CLIENT4, 41000));
        let request = Packet::tcp(FROM_CLIENT, client, node_port, TcpFlags::SYN);
        assert_eq!(lb.send(&request.bytes(), lb.up0).action, XDP_REDIRECT);
        let source = snat_source(&lb, &request);
        let reply = answer(&request, backend4(0), source);
        let sent_back = lb.send(&reply.bytes(), lb.dn0);
        assert_eq!(sent_back.action, XDP_REDIRECT);
        let input = icmp_error(
            FROM_CLIENT,
            client.ip(),
            node_port.ip(),
            64,
            TOO_BIG,
            &ip_packet(&sent_back.packet),
        );
        let out = lb.send(&input, lb.up0);
        let as_the_backend_sent_it = reply.routed(UP_MAC, mac_of(client.ip()));
        let expected = icmp_error(
            (DOWN_MAC, mac_of(backend4(0).ip())),
            client.ip(),
            backend4(0).ip(),
            63,
            TOO_BIG,
            &ip_packet(&as_the_backend_sent_it.bytes()),
        );
        assert_eq!((out.action, out.packet), (XDP_REDIRECT, expected));
        lb.assert_verdicts(&[
            (Verdict::ForwardToBackend, 1),
            (Verdict::ForwardReply, 1),
            (Verdict::ForwardIcmpErrorToBackend, 1),
        ]);
    });
}
