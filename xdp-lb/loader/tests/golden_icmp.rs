//! Golden packets, ICMP and ICMPv6 errors about tracked flows: an error from
//! the backend's side (a router's "fragmentation needed" or "packet too big",
//! a backend's "port unreachable") reaches the client with its quoted header
//! translated back to the frontend; an error from the client's side reaches
//! the flow's backend with the quoted header translated to it. Every expected
//! frame, quoted packet included, is built by etherparse with its checksums
//! computed from scratch. Errors about flows the LB does not track are passed
//! untouched. And a client's packet too big for the LB's link toward the
//! backend is answered with the error a router would send.
mod support;

use std::net::{IpAddr, SocketAddr};

use support::{
    frame::{ErrorKind, Packet, TcpFlags, icmp_error as error, ip_packet},
    in_private_netns,
    lb::{
        CLIENT_MAC, CLIENT4, CLIENT6, DOWN_MAC, FROM_CLIENT, Lb, ROUTER_MAC, ROUTER4, ROUTER6,
        UP_MAC, VIP4, VIP6, XDP_PASS, XDP_REDIRECT, XDP_TX, mac_of, too_big_answer, too_big_error,
    },
};
use xdp_lb::{Protocol, Verdict};

const MTU: u16 = 1280;
const CLIENT_PORT: u16 = 40_000;

fn vip(v6: bool, port: u16) -> SocketAddr {
    if v6 {
        SocketAddr::from((VIP6, port))
    } else {
        SocketAddr::from((VIP4, port))
    }
}

fn client(v6: bool) -> SocketAddr {
    if v6 {
        SocketAddr::from((CLIENT6, CLIENT_PORT))
    } else {
        SocketAddr::from((CLIENT4, CLIENT_PORT))
    }
}

fn router(v6: bool) -> IpAddr {
    if v6 { ROUTER6.into() } else { ROUTER4.into() }
}

/// An LB serving TCP on port 80 and UDP on port 53 of both VIPs, and the
/// request `request` already sent through it; returns its backend.
fn lb_with_flow(request: &Packet) -> (Lb, SocketAddr) {
    let mut lb = Lb::new();
    lb.serve_both_vips((1, 2), 80, Protocol::Tcp);
    lb.serve_both_vips((3, 4), 53, Protocol::Udp);
    let (_, backend, _) = lb.simulated(&request.flow());
    assert_eq!(lb.send(&request.bytes(), lb.up0).action, XDP_REDIRECT);
    (lb, backend)
}

fn syn(v6: bool) -> Packet {
    Packet::tcp(FROM_CLIENT, client(v6), vip(v6, 80), TcpFlags::SYN)
}

/// The LB's SYN-ACK to `client`, as the client receives it.
fn syn_ack_to(v6: bool, client: SocketAddr) -> Packet {
    Packet::tcp((UP_MAC, CLIENT_MAC), vip(v6, 80), client, TcpFlags::SYN_ACK)
}

/// The client's "too big" error to the VIP about `reply`.
fn too_big_from_the_client(v6: bool, reply: &Packet) -> Vec<u8> {
    error(
        FROM_CLIENT,
        client(v6).ip(),
        vip(v6, 80).ip(),
        64,
        ErrorKind::TooBig { mtu: MTU },
        &ip_packet(&reply.bytes()),
    )
}

/// A router's error about a request the LB sent to its backend: it reaches
/// the client quoting the request as the client sent it (to the VIP), as much
/// of it as the router quoted.
fn router_error_reaches_the_client(v6: bool, quote_len: Option<usize>) {
    in_private_netns(|| {
        let request = syn(v6);
        let (lb, backend) = lb_with_flow(&request);
        let cut = |p: Vec<u8>| match quote_len {
            Some(len) => p[..len].to_vec(),
            None => p,
        };
        let sent_on = request
            .with_dst(backend)
            .routed(DOWN_MAC, mac_of(backend.ip()));
        let input = error(
            (ROUTER_MAC, DOWN_MAC),
            router(v6),
            client(v6).ip(),
            64,
            ErrorKind::TooBig { mtu: MTU },
            &cut(ip_packet(&sent_on.bytes())),
        );
        let out = lb.send(&input, lb.dn0);
        assert_eq!(out.action, XDP_REDIRECT);
        let as_sent = request.routed(DOWN_MAC, mac_of(backend.ip()));
        let expected = error(
            (UP_MAC, CLIENT_MAC),
            router(v6),
            client(v6).ip(),
            63,
            ErrorKind::TooBig { mtu: MTU },
            &cut(ip_packet(&as_sent.bytes())),
        );
        assert_eq!(out.packet, expected);
        lb.assert_verdicts(&[
            (Verdict::ForwardToBackend, 1),
            (Verdict::ForwardIcmpErrorToClient, 1),
        ]);
    });
}

#[test]
fn a_routers_fragmentation_needed_reaches_the_client_translated_back() {
    router_error_reaches_the_client(false, None);
}

#[test]
fn a_quote_of_eight_transport_bytes_is_translated_too() {
    // IPv4 routers may quote only the IP header and 8 bytes (RFC 792), which
    // stop before the TCP checksum.
    router_error_reaches_the_client(false, Some(20 + 8));
}

#[test]
fn a_routers_packet_too_big_reaches_the_client_translated_back() {
    router_error_reaches_the_client(true, None);
}

/// The client's error about a reply of the flow (VIP → client) reaches the
/// flow's backend, the outer destination and the quoted source translated.
fn client_error_reaches_the_backend(v6: bool) {
    in_private_netns(|| {
        let request = syn(v6);
        let (lb, backend) = lb_with_flow(&request);
        let reply = syn_ack_to(v6, client(v6));
        let input = too_big_from_the_client(v6, &reply);
        let out = lb.send(&input, lb.up0);
        assert_eq!(out.action, XDP_REDIRECT);
        let expected = error(
            (DOWN_MAC, mac_of(backend.ip())),
            client(v6).ip(),
            backend.ip(),
            63,
            ErrorKind::TooBig { mtu: MTU },
            &ip_packet(&reply.with_src(backend).bytes()),
        );
        assert_eq!(out.packet, expected);
        lb.assert_verdicts(&[
            (Verdict::ForwardToBackend, 1),
            (Verdict::ForwardIcmpErrorToBackend, 1),
        ]);
    });
}

#[test]
fn a_clients_error_about_a_reply_reaches_the_backend_v4() {
    client_error_reaches_the_backend(false);
}

#[test]
fn a_clients_error_about_a_reply_reaches_the_backend_v6() {
    client_error_reaches_the_backend(true);
}

/// A backend's own error (UDP port unreachable) leaves with the frontend as
/// its outer source too, so the client never sees the backend's address.
fn backends_own_error_comes_from_the_vip(v6: bool) {
    in_private_netns(|| {
        let request = Packet::udp(FROM_CLIENT, client(v6), vip(v6, 53), b"query");
        let (lb, backend) = lb_with_flow(&request);
        let sent_on = request
            .with_dst(backend)
            .routed(DOWN_MAC, mac_of(backend.ip()));
        let input = error(
            (mac_of(backend.ip()), DOWN_MAC),
            backend.ip(),
            client(v6).ip(),
            64,
            ErrorKind::PortUnreachable,
            &ip_packet(&sent_on.bytes()),
        );
        let out = lb.send(&input, lb.dn0);
        assert_eq!(out.action, XDP_REDIRECT);
        let as_sent = request.routed(DOWN_MAC, mac_of(backend.ip()));
        let expected = error(
            (UP_MAC, CLIENT_MAC),
            vip(v6, 53).ip(),
            client(v6).ip(),
            63,
            ErrorKind::PortUnreachable,
            &ip_packet(&as_sent.bytes()),
        );
        assert_eq!(out.packet, expected);
    });
}

#[test]
fn a_backends_port_unreachable_comes_from_the_vip_v4() {
    backends_own_error_comes_from_the_vip(false);
}

#[test]
fn a_backends_port_unreachable_comes_from_the_vip_v6() {
    backends_own_error_comes_from_the_vip(true);
}

#[test]
fn errors_about_untracked_flows_pass_untouched() {
    for v6 in [false, true] {
        in_private_netns(|| {
            let request = syn(v6);
            let (lb, backend) = lb_with_flow(&request);
            // Another client port: a flow the LB never saw.
            let other = Packet::tcp(
                FROM_CLIENT,
                SocketAddr::new(client(v6).ip(), CLIENT_PORT + 1),
                backend,
                TcpFlags::SYN,
            );
            let to_client = error(
                (ROUTER_MAC, DOWN_MAC),
                router(v6),
                client(v6).ip(),
                64,
                ErrorKind::TooBig { mtu: MTU },
                &ip_packet(&other.bytes()),
            );
            let out = lb.send(&to_client, lb.dn0);
            assert_eq!((out.action, &out.packet), (XDP_PASS, &to_client));
            let reply = syn_ack_to(v6, SocketAddr::new(client(v6).ip(), CLIENT_PORT + 1));
            let to_vip = too_big_from_the_client(v6, &reply);
            let out = lb.send(&to_vip, lb.up0);
            assert_eq!((out.action, &out.packet), (XDP_PASS, &to_vip));
            lb.assert_verdicts(&[
                (Verdict::ForwardToBackend, 1),
                (Verdict::PassNotFrontend, 1),
                (Verdict::PassOtherProtocol, 1),
            ]);
        });
    }
}

/// A client's segment larger than the MTU of the LB's interface toward the
/// backend is answered, as a router would: the frame goes back to the
/// client as "fragmentation needed" / "packet too big", quoting the segment
/// as the client sent it (network header and 8 transport bytes).
fn too_big_for_the_backend_link_is_answered(v6: bool) {
    in_private_netns(|| {
        let mut lb = Lb::new();
        lb.serve_both_vips((1, 2), 80, Protocol::Tcp);
        support::run(&["ip", "link", "set", "dn0", "mtu", &MTU.to_string()]);
        let request = syn(v6);
        assert_eq!(lb.send(&request.bytes(), lb.up0).action, XDP_REDIRECT);
        let segment = Packet {
            payload: vec![0x42; 1300],
            ..request.with_flags(TcpFlags::ACK)
        };
        let input = segment.bytes();
        let out = lb.send(&input, lb.up0);
        assert_eq!(out.action, XDP_TX);
        let quoted = if v6 { 40 + 8 } else { 20 + 8 };
        assert_eq!(out.packet, too_big_answer(v6, &input[14..14 + quoted], MTU));
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1), (Verdict::AnswerTooBig, 1)]);
        // What fits still goes through.
        let small = Packet {
            payload: vec![0x42; 1000],
            ..request.with_flags(TcpFlags::ACK)
        };
        assert_eq!(lb.send(&small.bytes(), lb.up0).action, XDP_REDIRECT);
    });
}

#[test]
fn too_big_for_the_backend_link_is_answered_v4() {
    too_big_for_the_backend_link_is_answered(false);
}

#[test]
fn too_big_for_the_backend_link_is_answered_v6() {
    too_big_for_the_backend_link_is_answered(true);
}

/// A backend's reply larger than the MTU of the LB's interface toward the
/// client is answered to the backend, as a router would: from the client it
/// was going to, quoting the reply as the backend sent it, back out of the
/// interface it came in by. (Handed to the kernel translated, it would be
/// answered to the VIP, its new source: the backend would learn only if
/// routing brought that error back through this LB.)
fn too_big_for_the_client_link_is_answered(v6: bool) {
    in_private_netns(|| {
        let request = syn(v6);
        let (lb, backend) = lb_with_flow(&request);
        support::run(&["ip", "link", "set", "up0", "mtu", &MTU.to_string()]);
        let reply = |len| Packet {
            src_mac: mac_of(backend.ip()),
            dst_mac: DOWN_MAC,
            src: backend,
            dst: request.src,
            payload: vec![0x42; len],
            ..request.with_flags(TcpFlags::ACK)
        };
        let input = reply(1300).bytes();
        let out = lb.send(&input, lb.dn0);
        assert_eq!(out.action, XDP_TX);
        let quoted = if v6 { 40 + 8 } else { 20 + 8 };
        let expected = too_big_error(
            (DOWN_MAC, mac_of(backend.ip())),
            request.src.ip(),
            backend.ip(),
            &input[14..14 + quoted],
            MTU,
        );
        assert_eq!(out.packet, expected);
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1), (Verdict::AnswerTooBig, 1)]);
        // What fits still goes through.
        assert_eq!(lb.send(&reply(1000).bytes(), lb.dn0).action, XDP_REDIRECT);
    });
}

#[test]
fn too_big_for_the_client_link_is_answered_v4() {
    too_big_for_the_client_link_is_answered(false);
}

#[test]
fn too_big_for_the_client_link_is_answered_v6() {
    too_big_for_the_client_link_is_answered(true);
}
