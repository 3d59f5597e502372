//! Property: for any client, ports, payload, hash seed and Maglev table, a
//! packet to a VIP leaves `xdp_lb` as the frame etherparse builds for the
//! backend `simulate` names — addresses, ports, TTL, MACs and every checksum.
mod support;

use std::{
    cell::RefCell,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
};

use proptest::{
    collection::vec,
    prelude::*,
    test_runner::{Config as ProptestConfig, TestRunner},
};
use support::{
    frame::{L4, Packet, TcpFlags},
    in_private_netns,
    lb::{
        BACKEND4_IDS, BACKEND6_IDS, DOWN_MAC, FROM_CLIENT, Lb, SEED, VIP4, VIP6, XDP_REDIRECT,
        mac_of,
    },
};
use xdp_lb::{Config, Protocol, Verdict};

/// One generated case.
#[derive(Clone, Debug)]
struct Case {
    v6: bool,
    l4: L4,
    client: IpAddr,
    client_port: u16,
    seed: u64,
    /// Indexes into the family's four fixture backends.
    table: Vec<usize>,
    payload: Vec<u8>,
    ttl: u8,
}

fn client4() -> impl Strategy<Value = IpAddr> {
    // Unicast, outside 0/8, 127/8 and multicast.
    (1u8..=223, any::<[u8; 3]>())
        .prop_filter("not loopback", |(a, _)| *a != 127)
        .prop_map(|(a, [b, c, d])| IpAddr::from(Ipv4Addr::new(a, b, c, d)))
}

fn client6() -> impl Strategy<Value = IpAddr> {
    any::<[u16; 6]>().prop_map(|s| {
        IpAddr::from(Ipv6Addr::new(
            0x2001, 0x0db8, s[0], s[1], s[2], s[3], s[4], s[5],
        ))
    })
}

fn l4() -> impl Strategy<Value = L4> {
    // No FIN/RST: a closing entry would make a later SYN of a repeated case
    // (while shrinking) re-select, which `simulate` does not model.
    prop_oneof![
        Just(L4::Tcp(TcpFlags::SYN)),
        Just(L4::Tcp(TcpFlags::ACK)),
        Just(L4::Tcp(TcpFlags::PSH_ACK)),
        Just(L4::Udp {
            zero_checksum: false
        }),
        Just(L4::Udp {
            zero_checksum: true
        }),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    let size = prop_oneof![1usize..=40, Just(251), Just(509), Just(1021)];
    (
        any::<bool>(),
        l4(),
        client4(),
        client6(),
        1u16..,
        prop_oneof![Just(SEED), any::<u64>()],
        size.prop_flat_map(|n| vec(0usize..4, n)),
        vec(any::<u8>(), 0..200),
        2u8..,
    )
        .prop_map(
            |(v6, l4, c4, c6, client_port, seed, table, payload, ttl)| Case {
                v6,
                // UDP without checksum exists on IPv4 only.
                l4: match l4 {
                    L4::Udp { .. } if v6 => L4::Udp {
                        zero_checksum: false,
                    },
                    l4 => l4,
                },
                client: if v6 { c6 } else { c4 },
                client_port,
                seed,
                table,
                payload,
                ttl,
            },
        )
}

#[test]
fn any_flow_to_a_vip_leaves_as_the_frame_for_the_simulated_backend() {
    in_private_netns(|| {
        let mut lb = Lb::new();
        // Service IDs by (family, protocol).
        let frontends = [
            (7, SocketAddr::from((VIP4, 80)), Protocol::Tcp),
            (8, SocketAddr::from((VIP4, 53)), Protocol::Udp),
            (9, SocketAddr::from((VIP6, 80)), Protocol::Tcp),
            (10, SocketAddr::from((VIP6, 53)), Protocol::Udp),
        ];
        for (id, frontend, proto) in frontends {
            let ids = if frontend.is_ipv4() {
                BACKEND4_IDS
            } else {
                BACKEND6_IDS
            };
            lb.service(id, frontend, proto, &ids);
        }
        let lb = RefCell::new(lb);
        let forwarded = RefCell::new(0u64);

        let mut runner = TestRunner::new(ProptestConfig {
            cases: 64,
            failure_persistence: None,
            ..ProptestConfig::default()
        });
        let result = runner.run(&case(), |case| {
            let mut lb = lb.borrow_mut();
            let tcp = matches!(case.l4, L4::Tcp(_));
            let (service, frontend, _) = frontends[usize::from(case.v6) * 2 + usize::from(!tcp)];
            let ids = if case.v6 { BACKEND6_IDS } else { BACKEND4_IDS };
            let table: Vec<u32> = case.table.iter().map(|&i| ids[i]).collect();
            lb.dp.swap_table(service, &table).unwrap();
            lb.dp
                .set_config(&Config {
                    hash_seed: case.seed,
                    ..Config::default()
                })
                .unwrap();

            let packet = Packet {
                ttl: case.ttl,
                l4: case.l4,
                payload: case.payload.clone(),
                ..Packet::tcp(
                    FROM_CLIENT,
                    SocketAddr::new(case.client, case.client_port),
                    frontend,
                    TcpFlags::SYN,
                )
            };
            let (id, backend, _) = lb.simulated(&packet.flow());
            prop_assert!(
                table.contains(&id) || lb.dp.tracked_flow(&packet.flow()).unwrap().is_some()
            );
            let out = lb.send(&packet.bytes(), lb.up0);
            let expected = packet
                .with_dst(backend)
                .routed(DOWN_MAC, mac_of(backend.ip()))
                .bytes();
            prop_assert_eq!(out.action, XDP_REDIRECT);
            prop_assert_eq!(out.packet, expected);
            let mut forwarded = forwarded.borrow_mut();
            *forwarded += 1;
            let verdicts = lb.dp.verdict_stats().unwrap();
            prop_assert_eq!(verdicts.get(Verdict::ForwardToBackend).packets, *forwarded);
            prop_assert_eq!(verdicts.total_packets(), *forwarded);
            Ok(())
        });
        if let Err(failure) = result {
            panic!("{failure}");
        }
        assert_eq!(*forwarded.borrow(), 64);
    });
}
