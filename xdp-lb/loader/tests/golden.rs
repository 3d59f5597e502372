//! Golden packets through `BPF_PROG_TEST_RUN`: whole output frames compared with
//! frames built independently by etherparse (which computes every checksum
//! from scratch), and counters checked exactly. This file: TCP to a VIP
//! (DNAT, conntrack, selection, forwarding), and the benchmark wrapper.
//! Other topics are in `golden_*.rs`; the fixture is `support::lb`.
mod support;

use std::{net::SocketAddr, time::Duration};

use support::{
    frame::{IpExtras, Packet, TcpFlags, l4_checksum, with_zero_sum_after},
    in_private_netns,
    lb::{
        BACKEND4_IDS, BACKEND6_IDS, CLIENT4, CLIENT4_2, CLIENT6, DOWN_MAC, FROM_CLIENT, Lb,
        NO_NEIGHBOUR4, UNROUTED4, VIP4, VIP6, XDP_DROP, XDP_PASS, XDP_REDIRECT, XDP_TX, backend4,
        cycling, mac_of,
    },
};
use xdp_lb::{
    Config, Counter, CtEvent, FlowState, Frontend, ProgramName, Protocol, ServiceOptions,
    Simulation, Verdict,
};

const SERVICE: u32 = 7;

fn vip4() -> SocketAddr {
    SocketAddr::from((VIP4, 80))
}

fn client4(port: u16) -> SocketAddr {
    SocketAddr::from((CLIENT4, port))
}

/// The fixture with service `SERVICE` at VIP4:80/TCP over `table`.
fn lb_with_tcp4(table: &[u32]) -> Lb {
    let mut lb = Lb::new();
    lb.service(SERVICE, vip4(), Protocol::Tcp, table);
    lb
}

/// `packet` as the LB forwards it to `backend` through `dn0`.
fn to_backend(packet: &Packet, backend: SocketAddr) -> Vec<u8> {
    packet
        .with_dst(backend)
        .routed(DOWN_MAC, mac_of(backend.ip()))
        .bytes()
}

#[test]
fn tcp4_syn_to_a_vip_is_translated_to_the_simulated_backend() {
    in_private_netns(|| {
        let lb = lb_with_tcp4(&cycling(&BACKEND4_IDS[..2], 251));
        let syn = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        let (id, backend, tracked) = lb.simulated(&syn.flow());
        assert!(!tracked);
        assert!(BACKEND4_IDS[..2].contains(&id), "{id}");

        let out = lb.send(&syn.bytes(), lb.up0);
        assert_eq!(out.action, XDP_REDIRECT);
        assert_eq!(out.packet, to_backend(&syn, backend));

        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1)]);
        lb.assert_ct(&[(CtEvent::Created, 1)]);
        let entry = lb.dp.tracked_flow(&syn.flow()).unwrap().expect("tracked");
        assert_eq!(
            (entry.backend, entry.backend_id, entry.generation),
            (backend, id, 1)
        );
        assert_eq!(
            (entry.service_id, entry.state),
            (SERVICE, FlowState::SynSent)
        );
        assert!(!entry.seen_reply);
        assert_eq!(lb.dp.conntrack().unwrap().len(), 1);
        let Simulation::Backend { tracked: true, .. } = lb.dp.simulate(&syn.flow()).unwrap() else {
            panic!("the flow is tracked now");
        };
    });
}

#[test]
fn tcp6_syn_to_a_vip_is_translated_to_the_simulated_backend() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let vip = SocketAddr::from((VIP6, 443));
        lb.service(9, vip, Protocol::Tcp, &cycling(&BACKEND6_IDS, 509));
        let mut seen = Vec::new();
        for port in [40000, 40001, 40002, 40003, 40004, 40005] {
            let syn = Packet::tcp(
                FROM_CLIENT,
                SocketAddr::from((CLIENT6, port)),
                vip,
                TcpFlags::SYN,
            );
            let (id, backend, _) = lb.simulated(&syn.flow());
            assert!(BACKEND6_IDS.contains(&id), "{id}");
            let out = lb.send(&syn.bytes(), lb.up0);
            assert_eq!(out.action, XDP_REDIRECT, "port {port}");
            assert_eq!(out.packet, to_backend(&syn, backend), "port {port}");
            seen.push(id);
        }
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() > 1, "six flows all on one backend: {seen:?}");
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 6)]);
        lb.assert_ct(&[(CtEvent::Created, 6)]);
    });
}

#[test]
fn an_established_flow_keeps_its_backend_when_the_table_moves_its_slot() {
    in_private_netns(|| {
        let table = cycling(&BACKEND4_IDS[..2], 251);
        let mut lb = lb_with_tcp4(&table);
        let syn = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        let (old_id, old, _) = lb.simulated(&syn.flow());
        assert_eq!(lb.send(&syn.bytes(), lb.up0).packet, to_backend(&syn, old));

        // Find the flow's slot by bisection: the flow moves to backend 3 when
        // the changed half of the table holds its slot.
        let new_id = BACKEND4_IDS[2];
        let new = backend4(2);
        lb.dp.delete_flow(&syn.flow()).unwrap();
        let (mut lo, mut hi) = (0, table.len());
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let mut probe = table.clone();
            probe[lo..mid].fill(new_id);
            lb.dp.swap_table(SERVICE, &probe).unwrap();
            if lb.simulated(&syn.flow()).0 == new_id {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        let mut moved = table.clone();
        moved[lo] = new_id;
        lb.dp.swap_table(SERVICE, &moved).unwrap();
        assert_eq!(lb.simulated(&syn.flow()), (new_id, new, false), "slot {lo}");
        // Restore the entry and establish the connection against the old
        // table (SYN, the backend's SYN-ACK, the client's ACK), then move the
        // flow's slot.
        lb.dp.swap_table(SERVICE, &table).unwrap();
        assert_eq!(lb.send(&syn.bytes(), lb.up0).packet, to_backend(&syn, old));
        let syn_ack = Packet::tcp(
            (mac_of(old.ip()), DOWN_MAC),
            old,
            syn.src,
            TcpFlags::SYN_ACK,
        );
        assert_eq!(lb.send(&syn_ack.bytes(), lb.dn0).action, XDP_REDIRECT);
        let ack = syn.with_flags(TcpFlags::ACK);
        assert_eq!(lb.send(&ack.bytes(), lb.up0).packet, to_backend(&ack, old));
        let entry = lb.dp.tracked_flow(&syn.flow()).unwrap().expect("tracked");
        assert_eq!(entry.state, FlowState::Established);
        lb.dp.swap_table(SERVICE, &moved).unwrap();
        assert_eq!(lb.dp.table(SERVICE).unwrap().as_deref(), Some(&moved[..]));

        // The established flow stays, also for a retransmitted SYN.
        assert_eq!(lb.simulated(&syn.flow()), (old_id, old, true));
        let mut data = syn.with_flags(TcpFlags::PSH_ACK);
        data.payload = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        let out = lb.send(&data.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&data, old))
        );
        let out = lb.send(&syn.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&syn, old))
        );

        // A new flow that hashes to the same slot goes to the new backend.
        let fresh = (40001..50000)
            .map(|port| Packet::tcp(FROM_CLIENT, client4(port), vip4(), TcpFlags::SYN))
            .find(|p| lb.simulated(&p.flow()).0 == new_id)
            .expect("a flow on the moved slot");
        assert_eq!(lb.simulated(&fresh.flow()), (new_id, new, false));
        let out = lb.send(&fresh.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&fresh, new))
        );

        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 6), (Verdict::ForwardReply, 1)]);
        lb.assert_ct(&[
            (CtEvent::Created, 3),
            (CtEvent::Hit, 3),
            (CtEvent::ReplyHit, 1),
        ]);
        let entry = lb.dp.tracked_flow(&syn.flow()).unwrap().expect("tracked");
        assert_eq!((entry.backend_id, entry.backend), (old_id, old));
    });
}

#[test]
fn a_vip_s_tracked_flow_is_found_before_its_service_until_its_frontend_s_flows_go() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS[..2], 251));
        let other = SocketAddr::from((VIP4, 81));
        lb.service(
            SERVICE + 1,
            other,
            Protocol::Tcp,
            &cycling(&BACKEND4_IDS[..2], 251),
        );
        let syn = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        let kept = Packet::tcp(FROM_CLIENT, client4(40001), other, TcpFlags::SYN);
        let (id, backend, _) = lb.simulated(&syn.flow());
        assert_eq!(
            lb.send(&syn.bytes(), lb.up0).packet,
            to_backend(&syn, backend)
        );
        assert_eq!(lb.send(&kept.bytes(), lb.up0).action, XDP_REDIRECT);
        assert_eq!(lb.dp.removed_frontends_with_flows().unwrap(), []);

        // The frontend goes; its backends live on (the other service has
        // them). The tracked flow is still found, before the service, and
        // its frontend is what a restarted agent would find left behind.
        let frontend = Frontend::new(vip4(), Protocol::Tcp);
        lb.dp.remove_service(&frontend).unwrap();
        assert_eq!(lb.dp.removed_frontends_with_flows().unwrap(), [frontend]);
        let ack = syn.with_flags(TcpFlags::ACK);
        assert_eq!(lb.simulated(&ack.flow()), (id, backend, true));
        let out = lb.send(&ack.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&ack, backend))
        );

        // Deleting the frontend's flows (the reconciler does, right after
        // removing it) ends it: the next packet meets no service.
        assert_eq!(lb.dp.delete_flows_to(&[frontend]).unwrap(), 1);
        assert_eq!(lb.dp.removed_frontends_with_flows().unwrap(), []);
        assert_eq!(lb.dp.tracked_flow(&syn.flow()).unwrap(), None);
        assert!(lb.dp.tracked_flow(&kept.flow()).unwrap().is_some());
        assert_eq!(
            lb.dp.simulate(&ack.flow()).unwrap(),
            Simulation::UnknownPort
        );
        assert_eq!(lb.send(&ack.bytes(), lb.up0).action, XDP_DROP);
        assert_eq!(lb.dp.delete_flows_to(&[frontend]).unwrap(), 0);

        lb.assert_verdicts(&[
            (Verdict::ForwardToBackend, 3),
            (Verdict::DropUnknownPort, 1),
        ]);
        lb.assert_ct(&[(CtEvent::Created, 2), (CtEvent::Hit, 1)]);
    });
}

#[test]
fn a_syn_on_a_closing_flow_reselects() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS[..1], 251));
        let syn = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        let b0 = backend4(0);
        assert_eq!(lb.send(&syn.bytes(), lb.up0).packet, to_backend(&syn, b0));
        // Every slot now names backend 2: only a re-selection can reach it.
        lb.dp
            .swap_table(SERVICE, &cycling(&BACKEND4_IDS[1..2], 251))
            .unwrap();

        let fin = syn.with_flags(TcpFlags::FIN_ACK);
        let out = lb.send(&fin.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&fin, b0))
        );
        let state = |lb: &Lb| lb.dp.tracked_flow(&syn.flow()).unwrap().expect("tracked");
        assert_eq!(state(&lb).state, FlowState::Closing);
        lb.assert_ct(&[(CtEvent::Created, 1), (CtEvent::Hit, 1)]);

        // A pure ACK on the closing entry still keeps the backend.
        let ack = syn.with_flags(TcpFlags::ACK);
        assert_eq!(lb.send(&ack.bytes(), lb.up0).packet, to_backend(&ack, b0));
        assert_eq!(state(&lb).state, FlowState::Closing);

        // A new SYN on the old 5-tuple is a new connection: Maglev again.
        let b1 = backend4(1);
        let out = lb.send(&syn.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&syn, b1))
        );
        let entry = state(&lb);
        assert_eq!((entry.backend_id, entry.state), (2, FlowState::SynSent));
        lb.assert_ct(&[
            (CtEvent::Created, 2),
            (CtEvent::Hit, 2),
            (CtEvent::ReselectedClosing, 1),
        ]);
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 4)]);
    });
}

#[test]
fn a_rst_closes_the_flow_too() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS[..1], 251));
        let syn = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        lb.send(&syn.bytes(), lb.up0);
        let rst = syn.with_flags(TcpFlags::RST);
        assert_eq!(
            lb.send(&rst.bytes(), lb.up0).packet,
            to_backend(&rst, backend4(0))
        );
        let entry = lb.dp.tracked_flow(&syn.flow()).unwrap().expect("tracked");
        assert_eq!(entry.state, FlowState::Closing);
        lb.dp
            .swap_table(SERVICE, &cycling(&BACKEND4_IDS[3..4], 251))
            .unwrap();
        assert_eq!(
            lb.send(&syn.bytes(), lb.up0).packet,
            to_backend(&syn, backend4(3))
        );
        lb.assert_ct(&[
            (CtEvent::Created, 2),
            (CtEvent::Hit, 1),
            (CtEvent::ReselectedClosing, 1),
        ]);
    });
}

#[test]
fn a_mid_stream_segment_without_an_entry_is_balanced_and_tracked_as_established() {
    in_private_netns(|| {
        let lb = lb_with_tcp4(&cycling(&BACKEND4_IDS, 251));
        let mut data = Packet::tcp(FROM_CLIENT, client4(41000), vip4(), TcpFlags::PSH_ACK);
        data.payload = vec![0xab; 333];
        let (id, backend, false) = lb.simulated(&data.flow()) else {
            panic!("not tracked yet");
        };
        let out = lb.send(&data.bytes(), lb.up0);
        assert_eq!(
            (out.action, out.packet),
            (XDP_REDIRECT, to_backend(&data, backend))
        );
        let entry = lb.dp.tracked_flow(&data.flow()).unwrap().expect("tracked");
        assert_eq!(
            (entry.backend_id, entry.state),
            (id, FlowState::Established)
        );
        lb.assert_ct(&[(CtEvent::Created, 1)]);
    });
}

#[test]
fn an_expired_entry_is_reselected() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS[..1], 251));
        // A SYN-sent entry expires after 0 s: any later packet finds it expired.
        lb.dp
            .set_config(&Config {
                hash_seed: support::lb::SEED,
                tcp_syn_timeout_s: 0,
                ..Config::default()
            })
            .unwrap();
        let syn = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        assert_eq!(
            lb.send(&syn.bytes(), lb.up0).packet,
            to_backend(&syn, backend4(0))
        );
        lb.dp
            .swap_table(SERVICE, &cycling(&BACKEND4_IDS[2..3], 251))
            .unwrap();
        assert_eq!(
            lb.send(&syn.bytes(), lb.up0).packet,
            to_backend(&syn, backend4(2))
        );
        lb.assert_ct(&[(CtEvent::Created, 2), (CtEvent::Expired, 1)]);
        let entry = lb.dp.tracked_flow(&syn.flow()).unwrap().expect("tracked");
        assert_eq!(entry.backend_id, 3);
    });
}

#[test]
fn client_ip_affinity_puts_every_connection_of_a_client_on_one_backend() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let table = cycling(&BACKEND4_IDS, 251);
        lb.dp.swap_table(SERVICE, &table).unwrap();
        let frontend = Frontend::new(vip4(), Protocol::Tcp);
        let ports: Vec<u16> = (0..16).map(|i| 40000 + 7 * i).collect();
        let backends_of = |lb: &Lb, client| {
            let mut ids: Vec<u32> = ports
                .iter()
                .map(|&port| {
                    let syn = Packet::tcp(
                        FROM_CLIENT,
                        SocketAddr::from((client, port)),
                        vip4(),
                        TcpFlags::SYN,
                    );
                    let (id, backend, _) = lb.simulated(&syn.flow());
                    let out = lb.send(&syn.bytes(), lb.up0);
                    assert_eq!(out.packet, to_backend(&syn, backend), "port {port}");
                    id
                })
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        // Without affinity the 16 connections spread...
        lb.dp
            .upsert_service(&frontend, SERVICE, &ServiceOptions::default())
            .unwrap();
        assert!(backends_of(&lb, CLIENT4).len() > 1);
        for flow in lb.dp.conntrack().unwrap() {
            lb.dp.delete_flow(&flow.flow).unwrap();
        }
        // ...with it, each client's connections share one backend.
        lb.dp
            .upsert_service(
                &frontend,
                SERVICE,
                &ServiceOptions {
                    client_ip_affinity: Some(Duration::from_secs(10_800)),
                    ..ServiceOptions::default()
                },
            )
            .unwrap();
        assert_eq!(backends_of(&lb, CLIENT4).len(), 1);
        assert_eq!(backends_of(&lb, CLIENT4_2).len(), 1);
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 48)]);
        lb.assert_ct(&[(CtEvent::Created, 48)]);
    });
}

#[test]
fn ttl_1_is_passed_untouched_and_ttl_2_forwarded_with_ttl_1() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS, 251));
        lb.service(
            9,
            SocketAddr::from((VIP6, 80)),
            Protocol::Tcp,
            &BACKEND6_IDS,
        );
        let v4 = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        let v6 = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT6, 40000)),
            SocketAddr::from((VIP6, 80)),
            TcpFlags::SYN,
        );
        for syn in [&v4, &v6] {
            for ttl in [0, 1] {
                let input = Packet { ttl, ..syn.clone() }.bytes();
                let out = lb.send(&input, lb.up0);
                assert_eq!((out.action, &out.packet), (XDP_PASS, &input), "ttl {ttl}");
            }
        }
        assert!(lb.dp.conntrack().unwrap().is_empty(), "nothing tracked");
        lb.assert_verdicts(&[(Verdict::PassTtlExpired, 4)]);
        lb.assert_ct(&[]);

        for syn in [&v4, &v6] {
            let input = Packet {
                ttl: 2,
                ..syn.clone()
            };
            let (_, backend, _) = lb.simulated(&input.flow());
            let out = lb.send(&input.bytes(), lb.up0);
            let expected = to_backend(&input, backend);
            assert_eq!((out.action, out.packet), (XDP_REDIRECT, expected));
        }
        lb.assert_verdicts(&[(Verdict::PassTtlExpired, 4), (Verdict::ForwardToBackend, 2)]);
    });
}

#[test]
fn without_a_route_or_neighbour_the_translated_frame_goes_to_the_stack() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let unrouted = SocketAddr::from((UNROUTED4, 8080));
        let no_neighbour = SocketAddr::from((NO_NEIGHBOUR4, 8080));
        lb.dp.put_backend(21, unrouted, 1).unwrap();
        lb.dp.put_backend(22, no_neighbour, 1).unwrap();
        lb.service(SERVICE, vip4(), Protocol::Tcp, &[21]);
        lb.service(8, SocketAddr::from((VIP4, 81)), Protocol::Tcp, &[22]);
        for (port, backend) in [(80, unrouted), (81, no_neighbour)] {
            let syn = Packet::tcp(
                FROM_CLIENT,
                client4(40000),
                SocketAddr::from((VIP4, port)),
                TcpFlags::SYN,
            );
            let out = lb.send(&syn.bytes(), lb.up0);
            // Translated, but neither routed (TTL) nor re-addressed (MACs).
            assert_eq!(out.action, XDP_PASS, "{backend}");
            assert_eq!(out.packet, syn.with_dst(backend).bytes(), "{backend}");
        }
        lb.assert_verdicts(&[(Verdict::PassToBackendViaStack, 2)]);
        lb.assert_ct(&[(CtEvent::Created, 2)]);
        let mut tracked: Vec<u32> = lb
            .dp
            .conntrack()
            .unwrap()
            .iter()
            .map(|f| f.backend_id)
            .collect();
        tracked.sort_unstable();
        assert_eq!(tracked, [21, 22]);
    });
}

#[test]
fn a_next_hop_behind_the_ingress_interface_is_sent_back_with_xdp_tx() {
    in_private_netns(|| {
        let lb = lb_with_tcp4(&cycling(&BACKEND4_IDS[..1], 251));
        // The client's frame arrives on dn0, the backends' side.
        let syn = Packet::tcp(
            (support::lb::CLIENT_MAC, DOWN_MAC),
            client4(40000),
            vip4(),
            TcpFlags::SYN,
        );
        let out = lb.send(&syn.bytes(), lb.dn0);
        assert_eq!(out.action, XDP_TX);
        assert_eq!(out.packet, to_backend(&syn, backend4(0)));
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 1)]);
    });
}

#[test]
fn a_vlan_tagged_flow_is_translated_and_passed_to_the_stack() {
    in_private_netns(|| {
        let lb = lb_with_tcp4(&cycling(&BACKEND4_IDS, 251));
        let mut syn = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        syn.vlan = Some(100);
        let (_, backend, _) = lb.simulated(&syn.flow());
        let out = lb.send(&syn.bytes(), lb.up0);
        assert_eq!(out.action, XDP_PASS);
        assert_eq!(out.packet, syn.with_dst(backend).bytes());
        lb.assert_verdicts(&[(Verdict::PassToBackendViaStack, 1)]);
        lb.assert_ct(&[(CtEvent::Created, 1)]);
    });
}

#[test]
fn ip_options_extension_headers_and_ethernet_padding_survive_the_translation() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS, 251));
        let vip6 = SocketAddr::from((VIP6, 80));
        lb.service(9, vip6, Protocol::Tcp, &cycling(&BACKEND6_IDS, 251));
        let mut v4 = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        v4.extras = IpExtras::Ipv4Options;
        let mut padded = Packet::tcp(FROM_CLIENT, client4(40001), vip4(), TcpFlags::SYN);
        // A 54-byte frame padded to Ethernet's 60-byte minimum.
        padded.trailer = vec![0; 6];
        let mut v6 = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT6, 40000)),
            vip6,
            TcpFlags::SYN,
        );
        v6.extras = IpExtras::Ipv6DestinationOptions;
        v6.payload = b"hello".to_vec();
        for syn in [v4, padded, v6] {
            let (_, backend, _) = lb.simulated(&syn.flow());
            let out = lb.send(&syn.bytes(), lb.up0);
            assert_eq!(out.action, XDP_REDIRECT, "{syn:?}");
            assert_eq!(out.packet, to_backend(&syn, backend), "{syn:?}");
        }
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 3)]);
    });
}

#[test]
fn a_tcp_checksum_that_becomes_zero_stays_zero() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS, 251));
        let vip6 = SocketAddr::from((VIP6, 80));
        lb.service(9, vip6, Protocol::Tcp, &cycling(&BACKEND6_IDS, 251));
        let mut v4 = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::PSH_ACK);
        v4.payload = b"corner".to_vec();
        let mut v6 = Packet::tcp(
            FROM_CLIENT,
            SocketAddr::from((CLIENT6, 40000)),
            vip6,
            TcpFlags::PSH_ACK,
        );
        v6.payload = b"corner".to_vec();
        for seg in [v4, v6] {
            let (_, backend, _) = lb.simulated(&seg.flow());
            let seg = with_zero_sum_after(&seg, backend);
            let expected = to_backend(&seg, backend);
            assert_eq!(l4_checksum(&seg, &expected), 0, "the corner case");
            let out = lb.send(&seg.bytes(), lb.up0);
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, expected),
                "{seg:?}"
            );
        }
    });
}

#[test]
fn a_service_without_a_live_backend_refuses_with_a_reason() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let frontend = Frontend::new(vip4(), Protocol::Tcp);
        let syn = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        // Refused with a reset (`golden_refuse` checks the frame).
        let refuses = |lb: &Lb| {
            assert_eq!(
                lb.dp.simulate(&syn.flow()).unwrap(),
                Simulation::NoBackend {
                    service_id: SERVICE
                }
            );
            let out = lb.send(&syn.bytes(), lb.up0);
            assert_eq!(out.action, XDP_TX);
        };
        // No table at all.
        lb.dp
            .upsert_service(&frontend, SERVICE, &ServiceOptions::default())
            .unwrap();
        refuses(&lb);
        // A table whose backend records were never written (all zero).
        lb.dp.swap_table(SERVICE, &cycling(&[30, 31], 251)).unwrap();
        refuses(&lb);
        // A table of retired backends.
        lb.dp.swap_table(SERVICE, &cycling(&[1, 2], 251)).unwrap();
        lb.dp.retire_backend(1).unwrap();
        lb.dp.retire_backend(2).unwrap();
        refuses(&lb);
        // The table removed again.
        lb.dp.remove_table(SERVICE).unwrap();
        assert_eq!(lb.dp.table(SERVICE).unwrap(), None);
        refuses(&lb);
        lb.assert_verdicts(&[(Verdict::RefuseReset, 4)]);
        lb.assert_ct(&[]);
        assert!(lb.dp.conntrack().unwrap().is_empty());
        let stats = lb.dp.verdict_stats().unwrap();
        assert_eq!(
            stats.get(Verdict::RefuseReset).bytes,
            4 * syn.bytes().len() as u64
        );
    });
}

#[test]
fn service_and_backend_counters_count_exactly_the_translated_packets() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS, 251));
        lb.service(8, SocketAddr::from((VIP4, 81)), Protocol::Tcp, &[4]);
        let mut expected = [Counter::default(); 5];
        let mut service = Counter::default();
        for i in 0..12u16 {
            let mut p = Packet::tcp(FROM_CLIENT, client4(40000 + i), vip4(), TcpFlags::SYN);
            p.payload = vec![0x11; usize::from(i) * 37];
            let (id, backend, _) = lb.simulated(&p.flow());
            let frame = p.bytes();
            assert_eq!(lb.send(&frame, lb.up0).packet, to_backend(&p, backend));
            let len = frame.len() as u64;
            expected[id as usize].packets += 1;
            expected[id as usize].bytes += len;
            service.packets += 1;
            service.bytes += len;
        }
        // Not translated: not counted for any service or backend.
        let other = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN);
        lb.send(&Packet { ttl: 1, ..other }.bytes(), lb.up0);
        assert_eq!(lb.dp.service_stats(SERVICE).unwrap(), service);
        assert_eq!(lb.dp.service_stats(8).unwrap(), Counter::default());
        for id in BACKEND4_IDS {
            assert_eq!(
                lb.dp.backend_stats(id).unwrap(),
                expected[id as usize],
                "{id}"
            );
        }
        assert!(
            expected.iter().filter(|c| c.packets > 0).count() > 1,
            "12 flows on one backend"
        );
        let verdicts = lb.dp.verdict_stats().unwrap();
        assert_eq!(verdicts.get(Verdict::ForwardToBackend), service);
    });
}

#[test]
fn bench_wrapper_restores_the_packet_before_every_run() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        let input = Packet::tcp(FROM_CLIENT, client4(40000), vip4(), TcpFlags::SYN).bytes();
        lb.dp
            .bench_target(ProgramName::XdpFloor, &input)
            .expect("bench setup");
        let out = lb
            .dp
            .test_run_repeat(ProgramName::XdpBench, &input, 1000)
            .expect("run");
        assert_eq!(out.action, 2, "XDP_PASS from the floor through the wrapper");
        assert_eq!(lb.dp.floor_stats().expect("floor").packets, 1000);
    });
}

#[test]
fn bench_wrapper_rotation_makes_every_run_a_new_flow() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS[..2], 251));
        let input = Packet::tcp(FROM_CLIENT, client4(10000), vip4(), TcpFlags::SYN).bytes();
        // The TCP source port: Ethernet 14 + IPv4 20.
        let rotation = xdp_lb::Rotation {
            offset: 34,
            base: 10000,
            modulus: 0,
            divisor: 1,
        };
        lb.dp
            .bench_target_rotating(ProgramName::XdpLb, &input, &[rotation])
            .expect("setup");
        lb.dp
            .test_run_repeat(ProgramName::XdpBench, &input, 500)
            .expect("run");
        lb.assert_ct(&[(CtEvent::Created, 500)]);
        assert_eq!(lb.dp.conntrack().expect("conntrack").len(), 500);
    });
}

#[test]
fn bench_wrapper_forgetting_makes_one_packet_a_new_flow_in_every_run() {
    in_private_netns(|| {
        let mut lb = lb_with_tcp4(&cycling(&BACKEND4_IDS[..2], 251));
        let syn = Packet::tcp(FROM_CLIENT, client4(10000), vip4(), TcpFlags::SYN);
        let input = syn.bytes();
        lb.dp
            .bench_target_forgetting(ProgramName::XdpLb, &input, &syn.flow())
            .expect("setup");
        let out = lb
            .dp
            .test_run_repeat(ProgramName::XdpBench, &input, 500)
            .expect("run");
        let (_, backend, _) = lb.simulated(&syn.flow());
        assert_eq!(
            out.packet,
            to_backend(&syn, backend),
            "the last run's output"
        );
        // Every run created the flow anew; the last run's entry is left.
        lb.assert_ct(&[(CtEvent::Created, 500)]);
        let flows = lb.dp.conntrack().expect("conntrack");
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].flow, syn.flow());
    });
}
