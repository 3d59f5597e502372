//! The conntrack tables the datapath manages itself (`xdp_lb_common::
//! flow_table`), seen through packets and the loader API: a full bucket gives
//! up its least recently used slot, the flows it keeps go on, and a slot the
//! agent frees is taken by the next new flow before anything is evicted.
mod support;

use std::{
    net::{IpAddr, SocketAddr},
    thread::sleep,
    time::Duration,
};

use support::{
    frame::{Packet, TcpFlags},
    in_private_netns,
    lb::{
        BACKEND4_IDS, CLIENT4, DOWN_MAC, VIP4, XDP_REDIRECT, backend4, cycling, lb_interfaces,
        mac_of, syn_to_vip4,
    },
};
use xdp_lb::{
    AddressKind, CtEvent, Datapath, Frontend, LoadOptions, MapSizes, ProgramName, Protocol,
    ServiceOptions,
};

/// One flow asked for: the smallest table, one bucket of four slots each.
const SIZES: MapSizes = MapSizes {
    services: 16,
    backends: 32,
    conntrack: 1,
    addresses: 4,
};
const SERVICE: u32 = 7;

/// The client ports of the tracked flows, sorted.
fn tracked_ports(dp: &Datapath) -> Vec<u16> {
    let mut ports: Vec<u16> = dp
        .conntrack()
        .unwrap()
        .iter()
        .map(|f| f.flow.src.port())
        .collect();
    ports.sort_unstable();
    ports
}

/// (entries, capacity) of `CONNTRACK` and `CONNTRACK_REPLY`.
fn usage(dp: &Datapath) -> Vec<(&'static str, u64, u64)> {
    dp.map_usage()
        .unwrap()
        .into_iter()
        .filter(|u| u.name.starts_with("CONNTRACK"))
        .map(|u| (u.name, u.entries, u.capacity))
        .collect()
}

#[test]
fn a_full_bucket_gives_up_its_least_recently_used_flow_and_a_freed_slot_goes_first() {
    in_private_netns(|| {
        let (up0, dn0) = lb_interfaces();
        let mut dp = Datapath::load_with(&LoadOptions {
            sizes: SIZES,
            pin_dir: None,
        })
        .expect("load");
        dp.set_address(IpAddr::from(VIP4), AddressKind::Vip)
            .unwrap();
        dp.put_backend(BACKEND4_IDS[0], backend4(0), 1).unwrap();
        dp.swap_table(SERVICE, &cycling(&BACKEND4_IDS[..1], 251))
            .unwrap();
        dp.upsert_service(
            &Frontend::new(SocketAddr::from((VIP4, 80)), Protocol::Tcp),
            SERVICE,
            &ServiceOptions::default(),
        )
        .unwrap();
        let backend = backend4(0);
        let send = |dp: &Datapath, p: &Packet, ifindex| {
            dp.test_run_on(ProgramName::XdpLb, &p.bytes(), ifindex)
                .unwrap()
        };
        let to_backend = |p: &Packet| p.with_dst(backend).routed(DOWN_MAC, mac_of(backend.ip()));

        // Eight flows fill both buckets.
        for port in 40001..=40008 {
            let out = send(&dp, &syn_to_vip4(port, 80), up0);
            assert_eq!(
                (out.action, out.packet),
                (XDP_REDIRECT, to_backend(&syn_to_vip4(port, 80)).bytes())
            );
        }
        let mut kept: Vec<u16> = (40001..=40008).collect();
        assert_eq!(tracked_ports(&dp), kept);
        assert_eq!(usage(&dp), [("CONNTRACK", 8, 8), ("CONNTRACK_REPLY", 8, 8)]);

        // The first flow is used again once its entry is due a refresh (a
        // second), which marks its reply entry used too.
        sleep(Duration::from_millis(1100));
        let ack = syn_to_vip4(40001, 80).with_flags(TcpFlags::ACK);
        assert_eq!(send(&dp, &ack, up0).packet, to_backend(&ack).bytes());

        // A ninth flow takes the least recently used slot of each table: the
        // second flow's, not the first's.
        assert_eq!(send(&dp, &syn_to_vip4(40009, 80), up0).action, XDP_REDIRECT);
        kept.retain(|&p| p != 40002);
        kept.push(40009);
        assert_eq!(tracked_ports(&dp), kept);
        // The first flow's replies are still translated back to the VIP.
        let reply = Packet::tcp(
            (mac_of(backend.ip()), DOWN_MAC),
            backend,
            SocketAddr::from((CLIENT4, 40001)),
            TcpFlags::SYN_ACK,
        );
        assert_eq!(send(&dp, &reply, dn0).action, XDP_REDIRECT);
        // The second flow's reply entry went with its flow entry: its
        // backend's answer is no flow's (passed to the stack).
        let orphan = Packet::tcp(
            (mac_of(backend.ip()), DOWN_MAC),
            backend,
            SocketAddr::from((CLIENT4, 40002)),
            TcpFlags::SYN_ACK,
        );
        assert_ne!(send(&dp, &orphan, dn0).action, XDP_REDIRECT);

        // A flow the agent deletes frees its slots; the next new flow takes
        // them and evicts nothing.
        assert!(dp.delete_flow(&syn_to_vip4(40003, 80).flow()).unwrap());
        assert!(!dp.delete_flow(&syn_to_vip4(40003, 80).flow()).unwrap());
        kept.retain(|&p| p != 40003);
        assert_eq!(tracked_ports(&dp), kept);
        assert_eq!(usage(&dp), [("CONNTRACK", 7, 8), ("CONNTRACK_REPLY", 7, 8)]);
        assert_eq!(send(&dp, &syn_to_vip4(40010, 80), up0).action, XDP_REDIRECT);
        kept.push(40010);
        assert_eq!(tracked_ports(&dp), kept);

        let ct = dp.ct_stats().unwrap();
        assert_eq!(
            (
                ct.get(CtEvent::Created).packets,
                ct.get(CtEvent::Hit).packets,
                ct.get(CtEvent::ReplyHit).packets,
            ),
            (10, 1, 1)
        );
    });
}
