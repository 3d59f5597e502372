//! Golden packets, the TC programs of pod interfaces: `tc_lb_ingress`
//! balances what a pod sends and `tc_lb_egress` translates replies back on
//! their way into a pod, on the same maps as `xdp_lb`; `tc_lb_uplink`, at
//! an uplink's egress, refuses and drops a later fragment without its first
//! as `tc_lb_ingress` does (its balancing is
//! exercised by the fabric's netns tests, which need the node's routes). A request leaves
//! ingress with `bpf_redirect_neigh` toward the device the FIB names (the
//! kernel writes the MACs as it sends: the frame keeps its own here, and its
//! TTL); a reply continues from egress into the pod (`TC_ACT_OK`). Checksums are updated with the skb helpers and compared with
//! etherparse's. (Partial checksums, which only a real socket buffer
//! carries, are exercised by the fabric's netns tests.) A pod's fragmented
//! UDP datagrams, and the fragmented replies to them, are balanced and
//! translated as `xdp_lb` does it (golden_fragments), fragment by fragment,
//! IPv6 ones with Destination Options after the Fragment header too.
mod support;

use std::net::{IpAddr, SocketAddr};

use support::{
    fragment::{fragments, fragments6, fragments6_after_dst_opts},
    frame::{ErrorKind, L4, Packet, TcpFlags, icmp_error as error, ip_packet},
    in_private_netns,
    lb::{
        BACKEND4_IDS, CLIENT_MAC, CLIENT4, CLIENT4_2, CLIENT6, FROM_CLIENT, Lb, ROUTER_MAC,
        ROUTER4, ROUTER6, UP_MAC, VIP4, VIP6, XDP_TX, cycling, mac_of,
    },
};
use xdp_lb::{CtEvent, Frontend, ProgramName, Protocol, ServiceOptions, TestRunOutput, Verdict};

/// `TC_ACT_OK`: the kernel goes on with the packet.
const TC_ACT_OK: u32 = 0;
/// `TC_ACT_SHOT`: dropped.
const TC_ACT_SHOT: u32 = 2;

/// `TC_ACT_REDIRECT`: sent on by `bpf_redirect_neigh`.
const TC_ACT_REDIRECT: u32 = 7;

/// Runs `program` on `frame` as if on the client side's `up0` (the pods'
/// side, here).
fn run(lb: &Lb, program: ProgramName, frame: &[u8]) -> TestRunOutput {
    lb.dp.test_run_on(program, frame, lb.up0).expect("test run")
}

#[test]
fn ingress_translates_a_pods_requests_and_egress_its_replies() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        lb.serve_both_vips((1, 2), 80, Protocol::Tcp);
        lb.serve_both_vips((3, 4), 53, Protocol::Udp);
        let requests = [
            Packet::tcp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT4, 40000)),
                SocketAddr::from((VIP4, 80)),
                TcpFlags::SYN,
            ),
            Packet::tcp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT6, 40000)),
                SocketAddr::from((VIP6, 80)),
                TcpFlags::SYN,
            ),
            Packet::udp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT4, 5353)),
                SocketAddr::from((VIP4, 53)),
                b"query",
            ),
            Packet {
                l4: L4::Udp {
                    zero_checksum: true,
                },
                ..Packet::udp(
                    FROM_CLIENT,
                    SocketAddr::from((CLIENT4, 5354)),
                    SocketAddr::from((VIP4, 53)),
                    b"query",
                )
            },
            Packet::udp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT6, 5353)),
                SocketAddr::from((VIP6, 53)),
                b"query",
            ),
        ];
        for request in &requests {
            let (_, backend, _) = lb.simulated(&request.flow());
            let out = run(&lb, ProgramName::TcLbIngress, &request.bytes());
            assert_eq!(
                (out.action, out.packet),
                (TC_ACT_REDIRECT, request.with_dst(backend).bytes()),
                "{request:?}: redirected toward the backend, the kernel fills in the MACs"
            );
            let reply = Packet {
                src_mac: mac_of(backend.ip()),
                dst_mac: request.src_mac,
                src: backend,
                dst: request.src,
                l4: match request.l4 {
                    L4::Tcp(_) => L4::Tcp(TcpFlags::SYN_ACK),
                    udp => udp,
                },
                payload: b"answer".to_vec(),
                ..request.clone()
            };
            let out = run(&lb, ProgramName::TcLbEgress, &reply.bytes());
            assert_eq!(
                (out.action, out.packet),
                (TC_ACT_OK, reply.with_src(request.dst).bytes()),
                "the reply to {request:?}"
            );
        }
        let n = requests.len() as u64;
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, n), (Verdict::ForwardReply, n)]);
        lb.assert_ct(&[(CtEvent::Created, n), (CtEvent::ReplyHit, n)]);
    });
}

#[test]
fn egress_balances_nothing_and_passes_what_is_not_a_reply() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        lb.service(
            1,
            SocketAddr::from((VIP4, 80)),
            Protocol::Tcp,
            &cycling(&BACKEND4_IDS, 251),
        );
        let request = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT4, 40000)),
            SocketAddr::from((VIP4, 80)),
            TcpFlags::SYN,
        );
        // A request meeting the egress hook is not balanced there.
        let out = run(&lb, ProgramName::TcLbEgress, &request.bytes());
        assert_eq!((out.action, out.packet), (TC_ACT_OK, request.bytes()));
        assert!(lb.dp.tracked_flow(&request.flow()).unwrap().is_none());
        // Nor is anything between addresses xlb does not know, at either hook.
        let other = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT4, 40001)),
            SocketAddr::from((CLIENT4_2, 80)),
            TcpFlags::SYN,
        );
        for program in [ProgramName::TcLbIngress, ProgramName::TcLbEgress] {
            let out = run(&lb, program, &other.bytes());
            assert_eq!((out.action, out.packet), (TC_ACT_OK, other.bytes()));
        }
        lb.assert_verdicts(&[(Verdict::PassNotFrontend, 3)]);
    });
}

#[test]
fn ingress_and_uplink_refuse_a_service_without_backends_as_xdp_lb_does() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        // Services without a table: no backend.
        let frontends = [
            (SocketAddr::from((VIP6, 80)), Protocol::Tcp),
            (SocketAddr::from((VIP4, 80)), Protocol::Udp),
        ];
        for (frontend, proto) in frontends {
            lb.dp
                .upsert_service(
                    &Frontend::new(frontend, proto),
                    1,
                    &ServiceOptions::default(),
                )
                .expect("service");
        }
        let syn = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT6, 40000)),
            SocketAddr::from((VIP6, 80)),
            TcpFlags::SYN,
        );
        let query = Packet::udp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT4, 5353)),
            SocketAddr::from((VIP4, 80)),
            b"query",
        );
        // The same answer as xdp_lb's (golden_refuse checks those against
        // etherparse), sent back into the pod, or from an uplink's egress
        // back into the node's stack.
        for request in [&syn, &query] {
            let from_xdp = lb.send(&request.bytes(), lb.up0);
            assert_eq!(from_xdp.action, XDP_TX);
            for program in [ProgramName::TcLbIngress, ProgramName::TcLbUplink] {
                let out = run(&lb, program, &request.bytes());
                assert_eq!(
                    (out.action, &out.packet),
                    (TC_ACT_REDIRECT, &from_xdp.packet),
                    "{program:?}"
                );
            }
        }
        let unknown = syn.with_dst(SocketAddr::from((VIP6, 81)));
        let out = run(&lb, ProgramName::TcLbIngress, &unknown.bytes());
        assert_eq!(out.action, TC_ACT_SHOT);
        lb.assert_verdicts(&[
            (Verdict::RefuseReset, 3),
            (Verdict::RefuseUnreachable, 3),
            (Verdict::DropUnknownPort, 1),
        ]);
    });
}

/// A pod interface with TCP on port 80 and UDP on port 53 of both VIPs, and
/// `request` sent through its ingress hook; returns the request's backend.
fn tc_with_flow(request: &Packet) -> (Lb, SocketAddr) {
    let mut lb = Lb::new();
    lb.serve_both_vips((1, 2), 80, Protocol::Tcp);
    lb.serve_both_vips((3, 4), 53, Protocol::Udp);
    let (_, backend, _) = lb.simulated(&request.flow());
    let out = run(&lb, ProgramName::TcLbIngress, &request.bytes());
    assert_eq!(out.action, TC_ACT_REDIRECT);
    (lb, backend)
}

fn client(v6: bool, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::from((CLIENT6, port))
    } else {
        SocketAddr::from((CLIENT4, port))
    }
}

fn vip(v6: bool, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::from((VIP6, port))
    } else {
        SocketAddr::from((VIP4, port))
    }
}

/// A pod backend's "port unreachable" leaves the ingress hook translated as
/// `xdp_lb` translates it (golden_icmp): from the VIP, quoting the request as
/// its pod client sent it, redirected toward the client. The TC programs
/// keep the frame's MACs and TTL, as for the flow's own packets.
#[test]
fn a_pod_backends_port_unreachable_reaches_its_client_from_the_vip() {
    for v6 in [false, true] {
        in_private_netns(|| {
            let request = Packet::udp(FROM_CLIENT, client(v6, 5353), vip(v6, 53), b"query");
            let (lb, backend) = tc_with_flow(&request);
            let macs = (mac_of(backend.ip()), UP_MAC);
            let input = error(
                macs,
                backend.ip(),
                request.src.ip(),
                64,
                ErrorKind::PortUnreachable,
                &ip_packet(&request.with_dst(backend).bytes()),
            );
            let out = run(&lb, ProgramName::TcLbIngress, &input);
            let expected = error(
                macs,
                request.dst.ip(),
                request.src.ip(),
                64,
                ErrorKind::PortUnreachable,
                &ip_packet(&request.bytes()),
            );
            assert_eq!((out.action, out.packet), (TC_ACT_REDIRECT, expected));
            lb.assert_verdicts(&[
                (Verdict::ForwardToBackend, 1),
                (Verdict::ForwardIcmpErrorToClient, 1),
            ]);
        });
    }
}

/// The node's (or a router's) "fragmentation needed" / "packet too big"
/// about a pod's request goes on into the pod from the egress hook, quoting
/// the request as the pod sent it (to the VIP); the outer source, not the
/// backend, is kept. An error about a flow xlb does not track passes
/// untouched at both hooks.
#[test]
fn a_routers_error_about_a_pods_request_enters_the_pod_translated_back() {
    for v6 in [false, true] {
        in_private_netns(|| {
            let request = Packet::tcp(FROM_CLIENT, client(v6, 40000), vip(v6, 80), TcpFlags::SYN);
            let (lb, backend) = tc_with_flow(&request);
            let router = if v6 {
                IpAddr::from(ROUTER6)
            } else {
                IpAddr::from(ROUTER4)
            };
            let too_big = ErrorKind::TooBig { mtu: 1280 };
            let about = |quoted: &Packet| {
                error(
                    (ROUTER_MAC, CLIENT_MAC),
                    router,
                    request.src.ip(),
                    64,
                    too_big,
                    &ip_packet(&quoted.bytes()),
                )
            };
            let input = about(&request.with_dst(backend));
            let out = run(&lb, ProgramName::TcLbEgress, &input);
            assert_eq!((out.action, out.packet), (TC_ACT_OK, about(&request)));

            // Another client port: a flow the LB never saw.
            let untracked = about(&Packet {
                src: client(v6, 40001),
                ..request.with_dst(backend)
            });
            for program in [ProgramName::TcLbEgress, ProgramName::TcLbIngress] {
                let out = run(&lb, program, &untracked);
                assert_eq!((out.action, &out.packet), (TC_ACT_OK, &untracked));
            }
            lb.assert_verdicts(&[
                (Verdict::ForwardToBackend, 1),
                (Verdict::ForwardIcmpErrorToClient, 1),
                (Verdict::PassNotFrontend, 2),
            ]);
        });
    }
}

/// A pod client's error about a reply it got from the VIP leaves the ingress
/// hook toward the flow's backend, its destination and quoted source
/// translated to the backend.
#[test]
fn a_pod_clients_error_about_a_reply_reaches_the_backend() {
    for v6 in [false, true] {
        in_private_netns(|| {
            let request = Packet::tcp(FROM_CLIENT, client(v6, 40000), vip(v6, 80), TcpFlags::SYN);
            let (lb, backend) = tc_with_flow(&request);
            let reply = Packet::tcp(
                (UP_MAC, CLIENT_MAC),
                request.dst,
                request.src,
                TcpFlags::SYN_ACK,
            );
            let too_big = ErrorKind::TooBig { mtu: 1280 };
            let input = error(
                FROM_CLIENT,
                request.src.ip(),
                request.dst.ip(),
                64,
                too_big,
                &ip_packet(&reply.bytes()),
            );
            let out = run(&lb, ProgramName::TcLbIngress, &input);
            let expected = error(
                FROM_CLIENT,
                request.src.ip(),
                backend.ip(),
                64,
                too_big,
                &ip_packet(&reply.with_src(backend).bytes()),
            );
            assert_eq!((out.action, out.packet), (TC_ACT_REDIRECT, expected));
            lb.assert_verdicts(&[
                (Verdict::ForwardToBackend, 1),
                (Verdict::ForwardIcmpErrorToBackend, 1),
            ]);
        });
    }
}

/// `frame`, a whole datagram, cut into its first and later fragment
/// (`support::fragment`), with IP identification `id` (IPv6's widened).
fn cut(v6: bool, frame: &[u8], id: u16) -> (Vec<u8>, Vec<u8>) {
    if v6 {
        fragments6(frame, 0x00ab_0000 | u32::from(id))
    } else {
        fragments(frame, id)
    }
}

/// A 64-byte UDP datagram from a pod to port 53 of a ClusterIP: fragmented,
/// it carries 32 bytes in each fragment.
fn pod_query(v6: bool, port: u16) -> Packet {
    let payload: Vec<u8> = (0..56).collect();
    Packet::udp(FROM_CLIENT, client(v6, port), vip(v6, 53), &payload)
}

/// `backend`'s 200-byte answer to the pod that sent `request`, from its
/// own address (before the reverse translation).
fn backends_answer(request: &Packet, backend: SocketAddr) -> Packet {
    let payload: Vec<u8> = (0..200).map(|i| i as u8).collect();
    Packet::udp(
        (mac_of(backend.ip()), CLIENT_MAC),
        backend,
        request.src,
        &payload,
    )
}

/// A pod's fragmented request to a ClusterIP leaves the ingress hook as
/// `xdp_lb` sends it on (golden_fragments): the first fragment balanced as
/// the whole datagram would be, its UDP header translated there; the later
/// one toward the same backend with its destination address alone
/// translated. The output fragments are the translated datagram cut the
/// same way (the frame keeps its MACs and TTL, as ever at this hook).
#[test]
fn ingress_sends_a_pods_fragmented_request_to_one_backend() {
    for v6 in [false, true] {
        in_private_netns(|| {
            let mut lb = Lb::new();
            lb.serve_both_vips((3, 4), 53, Protocol::Udp);
            let request = pod_query(v6, 5353);
            let (_, backend, _) = lb.simulated(&request.flow());
            let (first, later) = cut(v6, &request.bytes(), 0x1234);
            let (first_out, later_out) = cut(v6, &request.with_dst(backend).bytes(), 0x1234);

            let out = run(&lb, ProgramName::TcLbIngress, &first);
            assert_eq!((out.action, out.packet), (TC_ACT_REDIRECT, first_out));
            let out = run(&lb, ProgramName::TcLbIngress, &later);
            assert_eq!((out.action, out.packet), (TC_ACT_REDIRECT, later_out));

            lb.assert_verdicts(&[(Verdict::ForwardToBackend, 2)]);
            lb.assert_ct(&[(CtEvent::Created, 1), (CtEvent::Hit, 1)]);
        });
    }
}

/// A backend's fragmented reply to a pod's request comes from the
/// ClusterIP at either hook that translates replies for a pod: the client
/// pod's egress (the reply reached the node untranslated) and a local
/// backend pod's ingress (sent on toward the client): the first fragment
/// with its UDP header translated, the later with its source address alone.
#[test]
fn a_backends_fragmented_reply_reaches_the_pod_from_the_clusterip() {
    let hooks = [
        (ProgramName::TcLbEgress, TC_ACT_OK),
        (ProgramName::TcLbIngress, TC_ACT_REDIRECT),
    ];
    for v6 in [false, true] {
        for (program, action) in hooks {
            in_private_netns(|| {
                let request = pod_query(v6, 5353);
                let (lb, backend) = tc_with_flow(&request);
                let reply = backends_answer(&request, backend);
                let (first, later) = cut(v6, &reply.bytes(), 0x5151);
                let translated = reply.with_src(request.dst).bytes();
                let (first_out, later_out) = cut(v6, &translated, 0x5151);

                let out = run(&lb, program, &first);
                assert_eq!(
                    (out.action, out.packet),
                    (action, first_out),
                    "{program:?}: the first fragment"
                );
                let out = run(&lb, program, &later);
                assert_eq!(
                    (out.action, out.packet),
                    (action, later_out),
                    "{program:?}: the later fragment"
                );

                lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1), (Verdict::ForwardReply, 2)]);
                lb.assert_ct(&[(CtEvent::Created, 1), (CtEvent::ReplyHit, 2)]);
            });
        }
    }
}

/// A later fragment to a ClusterIP whose first the ingress hook has not
/// seen has no ports to be balanced by: dropped, counted, as `xdp_lb` drops
/// it; so is one of another datagram of a balanced flow (another
/// identification); and at an uplink's egress, which balances the node's
/// own requests as ingress balances a pod's. The egress hook of a pod,
/// which balances nothing, lets it go into the pod untouched.
#[test]
fn ingress_and_uplink_drop_a_later_fragment_without_its_first() {
    for v6 in [false, true] {
        in_private_netns(|| {
            let mut lb = Lb::new();
            lb.serve_both_vips((3, 4), 53, Protocol::Udp);
            let request = pod_query(v6, 5354);
            let (first, later) = cut(v6, &request.bytes(), 0x4321);
            let out = run(&lb, ProgramName::TcLbIngress, &later);
            assert_eq!(out.action, TC_ACT_SHOT);

            let out = run(&lb, ProgramName::TcLbIngress, &first);
            assert_eq!(out.action, TC_ACT_REDIRECT);
            let (_, other_later) = cut(v6, &request.bytes(), 0x4322);
            for program in [ProgramName::TcLbIngress, ProgramName::TcLbUplink] {
                let out = run(&lb, program, &other_later);
                assert_eq!(out.action, TC_ACT_SHOT, "{program:?}");
            }

            let out = run(&lb, ProgramName::TcLbEgress, &other_later);
            assert_eq!((out.action, out.packet), (TC_ACT_OK, other_later));
            lb.assert_verdicts(&[
                (Verdict::DropFragmentUntracked, 3),
                (Verdict::ForwardToBackend, 1),
                (Verdict::PassNotFrontend, 1),
            ]);
        });
    }
}

/// IPv6 fragments with Destination Options after the Fragment header, whose
/// later fragment names those rather than UDP (golden_fragments): a pod's
/// request leaves ingress toward one backend, the first fragment translated
/// whole and the later its destination alone; the backend's reply comes
/// into the pod from the ClusterIP at its egress, each fragment with its
/// source translated; and a later fragment of another datagram of the
/// flow, whose first ingress has not seen, is dropped, counted.
#[test]
fn pod_fragments_after_destination_options_are_balanced_at_ingress_and_egress() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        lb.serve_both_vips((3, 4), 53, Protocol::Udp);
        let request = pod_query(true, 5355);
        let (_, backend, _) = lb.simulated(&request.flow());
        let (first, later) = fragments6_after_dst_opts(&request.bytes(), 0x00cd_1234);
        let (first_out, later_out) =
            fragments6_after_dst_opts(&request.with_dst(backend).bytes(), 0x00cd_1234);
        let out = run(&lb, ProgramName::TcLbIngress, &first);
        assert_eq!((out.action, out.packet), (TC_ACT_REDIRECT, first_out));
        let out = run(&lb, ProgramName::TcLbIngress, &later);
        assert_eq!((out.action, out.packet), (TC_ACT_REDIRECT, later_out));

        let reply = backends_answer(&request, backend);
        let (first, later) = fragments6_after_dst_opts(&reply.bytes(), 0x00cd_5151);
        let (first_out, later_out) =
            fragments6_after_dst_opts(&reply.with_src(request.dst).bytes(), 0x00cd_5151);
        let out = run(&lb, ProgramName::TcLbEgress, &first);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, first_out));
        let out = run(&lb, ProgramName::TcLbEgress, &later);
        assert_eq!((out.action, out.packet), (TC_ACT_OK, later_out));

        let (_, other_later) = fragments6_after_dst_opts(&request.bytes(), 0x00cd_1235);
        let out = run(&lb, ProgramName::TcLbIngress, &other_later);
        assert_eq!(out.action, TC_ACT_SHOT);

        lb.assert_verdicts(&[
            (Verdict::ForwardToBackend, 2),
            (Verdict::ForwardReply, 2),
            (Verdict::DropFragmentUntracked, 1),
        ]);
        lb.assert_ct(&[
            (CtEvent::Created, 1),
            (CtEvent::Hit, 1),
            (CtEvent::ReplyHit, 2),
        ]);
    });
}
